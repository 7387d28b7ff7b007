//! C tor's `have_enough_mem_for_dircache` (relay_config.c): whether the machine's memory
//! suits the `DirCache` setting. Only a warning: C tor keeps the setting either way.

/// C tor's `DIRCACHE_MIN_MEM_MB`.
pub const DIRCACHE_MIN_MEM_MB: u64 = 300;

/// The warning C tor logs at start for a relay (`options_validate`), if any. `total_mem`:
/// the machine's memory if known, else `MaxMemInQueues` as C tor falls back to.
pub fn memory_warning(dir_cache: bool, total_mem: u64) -> Option<String> {
    let enough = total_mem >= DIRCACHE_MIN_MEM_MB << 20;
    match (dir_cache, enough) {
        (true, false) => Some(format!(
            "Being a directory cache (default) with less than {DIRCACHE_MIN_MEM_MB} MB of \
             memory is not recommended and may consume most of the available resources. \
             Consider disabling this functionality by setting the DirCache option to 0."
        )),
        (false, true) => Some(
            "DirCache is disabled and we are configured as a relay. We will not become a \
             Guard."
                .into(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_as_c_tor_at_the_300_mb_line() {
        let mb = |n: u64| n << 20;
        assert!(memory_warning(true, mb(300)).is_none());
        assert!(memory_warning(false, mb(299)).is_none());
        let w = memory_warning(true, mb(299)).unwrap();
        assert!(w.starts_with("Being a directory cache (default) with less than 300 MB"));
        let w = memory_warning(false, mb(300)).unwrap();
        assert_eq!(
            w,
            "DirCache is disabled and we are configured as a relay. We will not become a Guard."
        );
    }
}
