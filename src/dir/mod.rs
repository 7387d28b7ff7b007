//! Directory work: descriptors, consensus, uploads.
