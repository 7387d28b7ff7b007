//! Reading torrc files with `%include` expansion (C tor `lib/fs/conffile.c`). File access goes
//! through [`ConfigFs`] so the expansion logic can run against an in-memory tree in tests and
//! the fuzzer.

use super::error::{ConfigError, ConfigErrorKind, Location};
use super::lexer::{parse_lines, ConfigLine};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// C tor's `MAX_INCLUDE_RECURSION_LEVEL`: the top file is level 1, each `%include` adds one.
pub const MAX_INCLUDE_DEPTH: u32 = 31;

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Missing,
    /// Sockets, devices...: not configuration.
    Other,
}

/// The file-system operations configuration reading needs.
pub trait ConfigFs {
    fn kind(&self, path: &Path) -> FileKind;
    fn read_to_string(&self, path: &Path) -> Result<String, String>;
    /// Names (not paths) of a directory's entries, any order.
    fn list_dir(&self, path: &Path) -> Result<Vec<String>, String>;
    /// A stable name for loop detection.
    fn canonical(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFs;

impl ConfigFs for OsFs {
    fn kind(&self, path: &Path) -> FileKind {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => FileKind::File,
            Ok(m) if m.is_dir() => FileKind::Dir,
            Ok(_) => FileKind::Other,
            Err(_) => FileKind::Missing,
        }
    }
    fn read_to_string(&self, path: &Path) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }
    fn list_dir(&self, path: &Path) -> Result<Vec<String>, String> {
        let rd = std::fs::read_dir(path).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| e.to_string())?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
    fn canonical(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// An in-memory tree: file paths to contents; directories are implied by file paths.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    pub files: BTreeMap<PathBuf, String>,
}

impl MemFs {
    pub fn with(mut self, path: &str, text: &str) -> Self {
        self.files.insert(PathBuf::from(path), text.to_string());
        self
    }
}

impl ConfigFs for MemFs {
    fn kind(&self, path: &Path) -> FileKind {
        if self.files.contains_key(path) {
            FileKind::File
        } else if self.files.keys().any(|p| p.starts_with(path) && p != path) {
            FileKind::Dir
        } else {
            FileKind::Missing
        }
    }
    fn read_to_string(&self, path: &Path) -> Result<String, String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| "No such file or directory".to_string())
    }
    fn list_dir(&self, path: &Path) -> Result<Vec<String>, String> {
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|p| p.strip_prefix(path).ok())
            .filter_map(|rest| rest.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        names.dedup();
        Ok(names)
    }
}

/// Reads `path` and every file it `%include`s, returning entries in file order.
pub fn read_config_file(fs: &dyn ConfigFs, path: &Path) -> Result<Vec<ConfigLine>, ConfigError> {
    let mut out = Vec::new();
    let mut stack = Vec::new();
    read_at_level(fs, path, 1, None, &mut stack, &mut out)?;
    Ok(out)
}

/// Parses torrc text that did not come from a file (e.g. tests, fuzzing); `%include`s in it
/// are still resolved through `fs`.
pub fn read_config_text(
    fs: &dyn ConfigFs,
    name: &str,
    text: &str,
) -> Result<Vec<ConfigLine>, ConfigError> {
    let mut out = Vec::new();
    let mut stack = Vec::new();
    let file: Arc<str> = name.into();
    expand(fs, parse_lines(text, &file)?, 1, &mut stack, &mut out)?;
    Ok(out)
}

fn read_at_level(
    fs: &dyn ConfigFs,
    path: &Path,
    level: u32,
    included_from: Option<&Location>,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<ConfigLine>,
) -> Result<(), ConfigError> {
    let err = |kind| match included_from {
        Some(loc) => ConfigError::at(loc, kind),
        None => ConfigError::global(kind),
    };
    if level > MAX_INCLUDE_DEPTH {
        return Err(err(ConfigErrorKind::Include(format!(
            "more than {MAX_INCLUDE_DEPTH} nested %includes (at {:?})",
            path.display().to_string()
        ))));
    }
    let canon = fs.canonical(path);
    if stack.contains(&canon) {
        return Err(err(ConfigErrorKind::Include(format!(
            "%include loop: {:?} includes itself",
            path.display().to_string()
        ))));
    }
    let text = fs.read_to_string(path).map_err(|reason| {
        err(ConfigErrorKind::Io {
            path: path.display().to_string(),
            reason,
        })
    })?;
    let file: Arc<str> = path.display().to_string().into();
    let lines = parse_lines(&text, &file)?;
    stack.push(canon);
    let r = expand(fs, lines, level, stack, out);
    stack.pop();
    r
}

fn expand(
    fs: &dyn ConfigFs,
    lines: Vec<ConfigLine>,
    level: u32,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<ConfigLine>,
) -> Result<(), ConfigError> {
    for l in lines {
        // C compares "%include" case-sensitively.
        if l.key != "%include" {
            out.push(l);
            continue;
        }
        for file in include_file_list(fs, &l.value, &l.location)? {
            read_at_level(fs, &file, level + 1, Some(&l.location), stack, out)?;
        }
    }
    Ok(())
}

/// The files one `%include` names: wildcard matches in lexical order; a directory contributes
/// its regular files in lexical order, skipping dotfiles and subdirectories.
fn include_file_list(
    fs: &dyn ConfigFs,
    pattern: &str,
    loc: &Location,
) -> Result<Vec<PathBuf>, ConfigError> {
    if pattern.is_empty() {
        return Err(ConfigError::at(
            loc,
            ConfigErrorKind::Include("%include needs a path".into()),
        ));
    }
    let io = |path: &Path, reason: String| {
        ConfigError::at(
            loc,
            ConfigErrorKind::Io {
                path: path.display().to_string(),
                reason,
            },
        )
    };
    let mut files = Vec::new();
    for path in expand_glob(fs, pattern, loc)? {
        match fs.kind(&path) {
            FileKind::File => files.push(path),
            FileKind::Dir => {
                let mut names = fs.list_dir(&path).map_err(|r| io(&path, r))?;
                names.sort();
                for name in names.into_iter().filter(|n| !n.starts_with('.')) {
                    let full = path.join(name);
                    if fs.kind(&full) == FileKind::File {
                        files.push(full);
                    }
                }
            }
            FileKind::Missing => return Err(io(&path, "No such file or directory".into())),
            FileKind::Other => return Err(io(&path, "not a file or directory".into())),
        }
    }
    Ok(files)
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands `*` and `?` in the last path component (C tor allows them anywhere; Fors keeps to
/// the common `dir/*.conf` case and says so otherwise).
fn expand_glob(
    fs: &dyn ConfigFs,
    pattern: &str,
    loc: &Location,
) -> Result<Vec<PathBuf>, ConfigError> {
    let path = PathBuf::from(pattern);
    if !has_glob(pattern) {
        return Ok(vec![path]);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if has_glob(&parent.to_string_lossy()) || name.contains('[') {
        return Err(ConfigError::at(
            loc,
            ConfigErrorKind::Include(format!(
                "%include {pattern:?}: Fors supports only '*' and '?' wildcards in the last path component"
            )),
        ));
    }
    let dir = if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.clone()
    };
    if fs.kind(&dir) != FileKind::Dir {
        return Ok(Vec::new());
    }
    let mut names = fs.list_dir(&dir).map_err(|reason| {
        ConfigError::at(
            loc,
            ConfigErrorKind::Io {
                path: dir.display().to_string(),
                reason,
            },
        )
    })?;
    names.sort();
    Ok(names
        .into_iter()
        // Like glob(3), a wildcard does not match a leading dot.
        .filter(|n| !n.starts_with('.') && wildcard_match(name.as_bytes(), n.as_bytes()))
        .map(|n| parent.join(n))
        .collect())
}

/// `*` matches any run, `?` one byte.
fn wildcard_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lines: &[ConfigLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| format!("{}={}@{}", l.key, l.value, l.location))
            .collect()
    }

    #[test]
    fn include_file_and_directory_in_lexical_order() {
        let fs = MemFs::default()
            .with(
                "/e/torrc",
                "A 1\n%include /e/d\nB 2\n%include /e/one.conf\n",
            )
            .with("/e/d/20-b", "X b\n")
            .with("/e/d/10-a", "X a\n")
            .with("/e/d/.hidden", "X hidden\n")
            .with("/e/d/sub/30-c", "X sub\n")
            .with("/e/one.conf", "\n\nY 1\n");
        let l = read_config_file(&fs, Path::new("/e/torrc")).unwrap();
        assert_eq!(
            keys(&l),
            vec![
                "A=1@/e/torrc:1",
                "X=a@/e/d/10-a:1",
                "X=b@/e/d/20-b:1",
                "B=2@/e/torrc:3",
                "Y=1@/e/one.conf:3"
            ]
        );
    }

    #[test]
    fn include_glob() {
        let fs = MemFs::default()
            .with("/g/torrc", "%include /g/d/*.conf\n")
            .with("/g/d/b.conf", "B 1\n")
            .with("/g/d/a.conf", "A 1\n")
            .with("/g/d/c.txt", "C 1\n");
        let l = read_config_file(&fs, Path::new("/g/torrc")).unwrap();
        assert_eq!(keys(&l), vec!["A=1@/g/d/a.conf:1", "B=1@/g/d/b.conf:1"]);
        assert!(wildcard_match(b"a*b?c", b"axxbyc"));
        assert!(!wildcard_match(b"a*b?c", b"axxbc"));
    }

    #[test]
    fn missing_include_is_an_error_naming_the_line() {
        let fs = MemFs::default().with("torrc", "A 1\n%include /nope\n");
        let e = read_config_file(&fs, Path::new("torrc")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "torrc:2: cannot read \"/nope\": No such file or directory"
        );
    }

    #[test]
    fn include_loop_is_an_error() {
        let fs = MemFs::default()
            .with("a", "%include b\n")
            .with("b", "X 1\n%include a\n");
        let e = read_config_file(&fs, Path::new("a")).unwrap_err();
        assert_eq!(e.to_string(), "b:2: %include loop: \"a\" includes itself");
    }

    #[test]
    fn include_depth_is_bounded_like_c_tor() {
        // A chain of 31 files (levels 1..=31) is fine; one more level is refused.
        let mut fs = MemFs::default();
        for i in 1..=32 {
            fs = fs.with(&format!("f{i}"), &format!("K{i} v\n%include f{}\n", i + 1));
        }
        fs = fs.with("f31", "K31 v\n");
        assert_eq!(read_config_file(&fs, Path::new("f1")).unwrap().len(), 31);
        fs = fs
            .with("f31", "K31 v\n%include f32\n")
            .with("f32", "K32 v\n");
        let e = read_config_file(&fs, Path::new("f1")).unwrap_err();
        assert_eq!(e.location.as_ref().unwrap().to_string(), "f31:2");
        assert!(
            e.to_string().contains("more than 31 nested %includes"),
            "{e}"
        );
    }

    #[test]
    fn real_files_on_disk() {
        let dir = std::env::temp_dir().join(format!("fors-config-src-{}", std::process::id()));
        let d = dir.join("torrc.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            dir.join("torrc"),
            format!("%include {}\nZ 9\n", d.display()),
        )
        .unwrap();
        std::fs::write(d.join("b"), "B 2\n").unwrap();
        std::fs::write(d.join("a"), "A 1\n").unwrap();
        std::fs::write(d.join(".a.swp"), "junk junk\n").unwrap();
        let l = read_config_file(&OsFs, &dir.join("torrc")).unwrap();
        let k: Vec<_> = l.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(k, ["A", "B", "Z"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
