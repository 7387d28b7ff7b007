//! tor1 relay crypto: AES-128-CTR and SHA-1 running digests, batched.
