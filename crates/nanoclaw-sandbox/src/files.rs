//! The file tools' protocol, and its implementation that runs inside the sandbox.
//!
//! The host sends one [`FileRequest`] as JSON on the init's stdin and reads one [`FileReply`]
//! from its stdout. Every path in a request is resolved and opened *inside* the sandbox, where
//! the only writable places are the workspace and `/tmp`; the host never opens a workspace path,
//! so a symlink planted by the agent can only ever point at something inside the sandbox.
//!
//! Every result is bounded: bytes read, entries listed, matches found, line length.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::{Limits, Program};
use crate::{Backend, ExecRequest, SandboxError, WORKSPACE_IN_SANDBOX};

/// Bytes of file content returned by one read; the rest is reported, not returned.
pub const MAX_READ_BYTES: usize = 256 * 1024;
/// Largest request the init accepts on stdin (bounds a write's content).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Paths returned by one `list`.
pub const MAX_LIST_ENTRIES: usize = 1000;
/// Matching lines returned by one `grep`.
pub const MAX_GREP_MATCHES: usize = 200;
/// Characters of a matching line shown by `grep`.
pub const MAX_GREP_LINE_CHARS: usize = 300;
/// Files larger than this are skipped by `grep`.
pub const MAX_GREP_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Directory entries visited by one walk, so a huge tree cannot stall a tool call.
pub const MAX_WALK_ENTRIES: usize = 100_000;

/// One file operation, as sent from the host to the init.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum FileRequest {
    /// Read a text file; `offset` is the first line (1-based), `limit` the number of lines.
    Read {
        path: String,
        offset: Option<usize>,
        limit: Option<usize>,
    },
    /// Create or replace a file with `content`, creating parent directories.
    Write { path: String, content: String },
    /// Replace the single exact occurrence of `old` with `new`.
    Edit {
        path: String,
        old: String,
        new: String,
    },
    /// List files under `path` (default: the workspace) whose relative path matches `pattern`.
    List {
        pattern: String,
        path: Option<String>,
    },
    /// Search files under `path` for lines matching the regex `pattern`.
    Grep {
        pattern: String,
        path: Option<String>,
        glob: Option<String>,
        ignore_case: bool,
    },
}

/// The init's answer to one [`FileRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum FileReply {
    Ok { text: String },
    NotFound { path: String },
    Error { message: String },
}

/// Run one file operation in the group's sandbox.
pub async fn run_file_op(
    backend: &dyn Backend,
    workspace: PathBuf,
    request: &FileRequest,
    limits: Limits,
) -> Result<FileReply, SandboxError> {
    let stdin = serde_json::to_vec(request).map_err(|e| SandboxError::BadReply(e.to_string()))?;
    let req = ExecRequest {
        workspace,
        program: Program::FileRequest,
        stdin,
        limits,
        proxy_socket: None,
        trust_dir: None,
        env: Vec::new(),
        stream: None,
    };
    let out = backend.exec(&req).await?;
    match (out.file_reply, out.state) {
        (Some(reply), _) => Ok(reply),
        (None, crate::ExitState::TimedOut) => Ok(FileReply::Error {
            message: format!("timed out after {} s", limits.wall_time.as_secs()),
        }),
        (None, other) => Err(SandboxError::BadReply(format!(
            "the file helper ended with {other} and no reply"
        ))),
    }
}

/// Inside the sandbox: read one request from stdin and carry it out.
pub fn serve_stdin_request() -> FileReply {
    let mut raw = Vec::new();
    match std::io::stdin()
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut raw)
    {
        Err(e) => FileReply::Error {
            message: format!("reading the request: {e}"),
        },
        Ok(_) if raw.len() > MAX_REQUEST_BYTES => FileReply::Error {
            message: format!("request larger than {MAX_REQUEST_BYTES} bytes"),
        },
        Ok(_) => match serde_json::from_slice::<FileRequest>(&raw) {
            Ok(req) => execute(&req),
            Err(e) => FileReply::Error {
                message: format!("bad request: {e}"),
            },
        },
    }
}

/// Carry out one request against the sandbox's own file system.
pub fn execute(req: &FileRequest) -> FileReply {
    let result = match req {
        FileRequest::Read {
            path,
            offset,
            limit,
        } => read(path, *offset, *limit),
        FileRequest::Write { path, content } => write(path, content),
        FileRequest::Edit { path, old, new } => edit(path, old, new),
        FileRequest::List { pattern, path } => list(pattern, path.as_deref()),
        FileRequest::Grep {
            pattern,
            path,
            glob,
            ignore_case,
        } => grep(pattern, path.as_deref(), glob.as_deref(), *ignore_case),
    };
    match result {
        Ok(text) => FileReply::Ok { text },
        Err(OpError::NotFound(path)) => FileReply::NotFound { path },
        Err(OpError::Failed(message)) => FileReply::Error { message },
    }
}

enum OpError {
    NotFound(String),
    Failed(String),
}

fn io_error(path: &str, e: std::io::Error) -> OpError {
    if e.kind() == std::io::ErrorKind::NotFound {
        OpError::NotFound(path.to_owned())
    } else {
        OpError::Failed(format!("{path}: {e}"))
    }
}

/// Relative paths are taken from the workspace.
fn resolve(path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(WORKSPACE_IN_SANDBOX).join(p)
    }
}

/// Largest file `read_file` and `edit_file` read whole.
const MAX_TEXT_FILE_BYTES: u64 = 16 << 20;

/// Open `path` without blocking (a FIFO planted under a file's name would stall the reader
/// or writer forever) and refuse anything but a regular file.
fn open_regular(path: &str, options: &mut fs::OpenOptions) -> Result<fs::File, OpError> {
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = || {
        OpError::Failed(format!(
            "{path} is not a regular file (FIFOs, devices and sockets are never read or written by the file tools)"
        ))
    };
    let file = match options
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(resolve(path))
    {
        Ok(file) => file,
        // A FIFO opened for writing without a reader.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Err(not_regular()),
        Err(e) => return Err(io_error(path, e)),
    };
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

fn read_text(path: &str) -> Result<String, OpError> {
    let file = open_regular(path, fs::OpenOptions::new().read(true))?;
    let mut bytes = Vec::new();
    file.take(MAX_TEXT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    if bytes.len() as u64 > MAX_TEXT_FILE_BYTES {
        return Err(OpError::Failed(format!(
            "{path} is larger than {} MiB, the most the file tools read whole; use the shell",
            MAX_TEXT_FILE_BYTES >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|_| OpError::Failed(format!("{path} is not UTF-8 text")))
}

fn read(path: &str, offset: Option<usize>, limit: Option<usize>) -> Result<String, OpError> {
    let text = read_text(path)?;
    let first = offset.unwrap_or(1).max(1);
    let selected: String = match (offset, limit) {
        (None, None) => text,
        _ => text
            .split_inclusive('\n')
            .skip(first - 1)
            .take(limit.unwrap_or(usize::MAX))
            .collect(),
    };
    if selected.len() <= MAX_READ_BYTES {
        return Ok(selected);
    }
    let mut cut = MAX_READ_BYTES;
    while !selected.is_char_boundary(cut) {
        cut -= 1;
    }
    Ok(format!(
        "{}\n[truncated: showed {cut} of {} bytes; read with offset and limit for the rest]",
        &selected[..cut],
        selected.len()
    ))
}

fn write(path: &str, content: &str) -> Result<String, OpError> {
    let target = resolve(path);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error(path, e))?;
    }
    let mut file = open_regular(path, fs::OpenOptions::new().write(true).create(true))?;
    use std::io::Write;
    file.set_len(0)
        .and_then(|()| file.write_all(content.as_bytes()))
        .map_err(|e| io_error(path, e))?;
    Ok(format!("wrote {} bytes to {path}", content.len()))
}

fn edit(path: &str, old: &str, new: &str) -> Result<String, OpError> {
    if old.is_empty() {
        return Err(OpError::Failed(
            "old text is empty; give the exact text to replace".into(),
        ));
    }
    let text = read_text(path)?;
    match text.matches(old).count() {
        0 => Err(OpError::Failed(format!(
            "old text not found in {path}; nothing changed"
        ))),
        1 => {
            write(path, &text.replacen(old, new, 1))?;
            Ok(format!("edited {path}: replaced 1 occurrence"))
        }
        n => Err(OpError::Failed(format!(
            "old text occurs {n} times in {path}; include more surrounding text so it matches once; nothing changed"
        ))),
    }
}

/// What can be told about a request before it runs (its patterns compile, a write goes where
/// writes can go), so a call that cannot run is refused before anyone approves it.
pub fn check(req: &FileRequest) -> Result<(), String> {
    let writable = |path: &str| {
        let p = Path::new(path);
        let inside = !p.is_absolute() || p.starts_with("/workspace") || p.starts_with("/tmp");
        if inside && !path.trim().is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{path:?}: files are written under /workspace (or /tmp) only"
            ))
        }
    };
    let failed = |e: OpError| match e {
        OpError::Failed(m) => m,
        _ => "the pattern cannot be used".to_owned(),
    };
    match req {
        FileRequest::Write { path, .. } | FileRequest::Edit { path, .. } => writable(path),
        FileRequest::List { pattern, .. } => glob_matcher(pattern).map(drop).map_err(failed),
        FileRequest::Grep { pattern, glob, .. } => {
            regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("bad regex {pattern:?}: {e}"))?;
            match glob {
                Some(g) => glob_matcher(g).map(drop).map_err(failed),
                None => Ok(()),
            }
        }
        FileRequest::Read { .. } => Ok(()),
    }
}

fn glob_matcher(pattern: &str) -> Result<globset::GlobMatcher, OpError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| OpError::Failed(format!("bad glob {pattern:?}: {e}")))
}

/// Every regular file under `root`, as paths relative to it, sorted. Symlinks are listed but
/// never followed into, so a walk cannot loop or leave the tree.
fn walk(root: &Path) -> Result<Vec<PathBuf>, OpError> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    let mut visited = 0usize;
    while let Some(rel) = pending.pop() {
        let entries = match fs::read_dir(root.join(&rel)) {
            Ok(entries) => entries,
            Err(e) if rel.as_os_str().is_empty() => {
                return Err(io_error(&root.display().to_string(), e));
            }
            Err(_) => continue, // an unreadable subdirectory is skipped, not fatal
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > MAX_WALK_ENTRIES {
                return Err(OpError::Failed(format!(
                    "more than {MAX_WALK_ENTRIES} entries under {}; narrow the path",
                    root.display()
                )));
            }
            let child = rel.join(entry.file_name());
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(child),
                Ok(_) => files.push(child),
                Err(_) => {}
            }
        }
    }
    files.sort();
    Ok(files)
}

fn list(pattern: &str, path: Option<&str>) -> Result<String, OpError> {
    let matcher = glob_matcher(pattern)?;
    let root = resolve(path.unwrap_or("."));
    let hits: Vec<_> = walk(&root)?
        .into_iter()
        .filter(|p| matcher.is_match(p))
        .collect();
    if hits.is_empty() {
        return Ok(format!("no files match {pattern:?}"));
    }
    let mut out: Vec<String> = hits
        .iter()
        .take(MAX_LIST_ENTRIES)
        .map(|p| p.display().to_string())
        .collect();
    if hits.len() > MAX_LIST_ENTRIES {
        out.push(format!(
            "[truncated: {} of {} matches shown]",
            MAX_LIST_ENTRIES,
            hits.len()
        ));
    }
    Ok(out.join("\n"))
}

fn grep(
    pattern: &str,
    path: Option<&str>,
    glob: Option<&str>,
    ignore_case: bool,
) -> Result<String, OpError> {
    let regex = regex::RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| OpError::Failed(format!("bad regex {pattern:?}: {e}")))?;
    let filter = glob.map(glob_matcher).transpose()?;
    let root = resolve(path.unwrap_or("."));
    // A single file may be named directly.
    let (base, files) = if root.is_file() {
        let name = root.file_name().map(PathBuf::from).unwrap_or_default();
        (
            root.parent().map(Path::to_path_buf).unwrap_or_default(),
            vec![name],
        )
    } else {
        (root.clone(), walk(&root)?)
    };
    let mut out = Vec::new();
    let mut total = 0usize;
    for rel in files {
        if filter.as_ref().is_some_and(|f| !f.is_match(&rel)) {
            continue;
        }
        let full = base.join(&rel);
        if fs::symlink_metadata(&full)
            .map_or(true, |m| !m.is_file() || m.len() > MAX_GREP_FILE_BYTES)
        {
            continue;
        }
        let Ok(bytes) = fs::read(&full) else { continue };
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        }; // binary files are skipped
        for (n, line) in text.lines().enumerate() {
            if regex.is_match(line) {
                total += 1;
                if out.len() < MAX_GREP_MATCHES {
                    let shown: String = line.chars().take(MAX_GREP_LINE_CHARS).collect();
                    out.push(format!("{}:{}:{shown}", rel.display(), n + 1));
                }
            }
        }
    }
    if total == 0 {
        return Ok(format!("no lines match {pattern:?}"));
    }
    if total > MAX_GREP_MATCHES {
        out.push(format!(
            "[truncated: {MAX_GREP_MATCHES} of {total} matching lines shown]"
        ));
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests with absolute paths into a temp dir exercise the same code the init runs.
    fn at(dir: &tempfile::TempDir, rel: &str) -> String {
        dir.path().join(rel).display().to_string()
    }

    fn ok(reply: FileReply) -> String {
        match reply {
            FileReply::Ok { text } => text,
            other => panic!("expected ok, got {other:?}"),
        }
    }

    fn err(reply: FileReply) -> String {
        match reply {
            FileReply::Error { message } => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn write_creates_parents_and_read_selects_lines() {
        let d = tempfile::tempdir().unwrap();
        ok(execute(&FileRequest::Write {
            path: at(&d, "a/b/c.txt"),
            content: "1\n2\n3\n4\n".into(),
        }));
        let read = |offset, limit| {
            execute(&FileRequest::Read {
                path: at(&d, "a/b/c.txt"),
                offset,
                limit,
            })
        };
        assert_eq!(ok(read(None, None)), "1\n2\n3\n4\n");
        assert_eq!(ok(read(Some(2), Some(2))), "2\n3\n");
        assert_eq!(ok(read(Some(9), None)), "");
    }

    #[test]
    fn read_of_a_huge_file_is_truncated_with_a_note() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("big"), "é".repeat(MAX_READ_BYTES)).unwrap();
        let text = ok(execute(&FileRequest::Read {
            path: at(&d, "big"),
            offset: None,
            limit: None,
        }));
        assert!(text.contains("[truncated: showed"));
        assert!(text.len() < MAX_READ_BYTES + 200);
    }

    // The red team's FIFO named MEMORY.md stalled every later turn for a minute.
    #[test]
    fn a_fifo_under_a_files_name_is_refused_at_once() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("MEMORY.md");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let started = std::time::Instant::now();
        for req in [
            FileRequest::Read {
                path: at(&d, "MEMORY.md"),
                offset: None,
                limit: None,
            },
            FileRequest::Write {
                path: at(&d, "MEMORY.md"),
                content: "x".into(),
            },
            FileRequest::Edit {
                path: at(&d, "MEMORY.md"),
                old: "a".into(),
                new: "b".into(),
            },
        ] {
            assert!(err(execute(&req)).contains("not a regular file"));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn read_refuses_binary_and_reports_missing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bin"), [0xff, 0xfe, 0x00]).unwrap();
        assert!(
            err(execute(&FileRequest::Read {
                path: at(&d, "bin"),
                offset: None,
                limit: None
            }))
            .contains("not UTF-8")
        );
        let missing = execute(&FileRequest::Read {
            path: at(&d, "nope"),
            offset: None,
            limit: None,
        });
        assert!(matches!(missing, FileReply::NotFound { .. }));
    }

    #[test]
    fn edit_needs_exactly_one_match_and_changes_nothing_otherwise() {
        let d = tempfile::tempdir().unwrap();
        let p = at(&d, "f");
        std::fs::write(&p, "x y x").unwrap();
        let edit = |old: &str| {
            execute(&FileRequest::Edit {
                path: p.clone(),
                old: old.into(),
                new: "Z".into(),
            })
        };
        assert!(err(edit("x")).contains("occurs 2 times"));
        assert!(err(edit("q")).contains("not found"));
        assert!(err(edit("")).contains("empty"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "x y x");
        ok(edit("y"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "x Z x");
    }

    #[test]
    fn list_matches_globs_and_never_follows_symlinked_dirs() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a.md", "sub/b.md", "sub/c.txt"] {
            ok(execute(&FileRequest::Write {
                path: at(&d, f),
                content: String::new(),
            }));
        }
        std::os::unix::fs::symlink("/", d.path().join("root-link")).unwrap();
        let list = |pattern: &str| {
            execute(&FileRequest::List {
                pattern: pattern.into(),
                path: Some(at(&d, "")),
            })
        };
        assert_eq!(ok(list("**/*.md")), "a.md\nsub/b.md");
        assert_eq!(ok(list("*.md")), "a.md");
        assert_eq!(ok(list("root-link/**")), "no files match \"root-link/**\"");
        assert!(err(list("[")).contains("bad glob"));
    }

    #[test]
    fn grep_finds_lines_skips_binary_and_caps_matches() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("t.txt"), "alpha\nBeta\ngamma\n").unwrap();
        std::fs::write(d.path().join("b.bin"), [b'a', 0xff, b'\n']).unwrap();
        let many: String = (0..MAX_GREP_MATCHES + 5)
            .map(|i| format!("hit {i}\n"))
            .collect();
        std::fs::write(d.path().join("many.txt"), many).unwrap();
        let grep = |pattern: &str, ignore_case, glob: Option<&str>| {
            execute(&FileRequest::Grep {
                pattern: pattern.into(),
                path: Some(at(&d, "")),
                glob: glob.map(str::to_owned),
                ignore_case,
            })
        };
        assert_eq!(ok(grep("^beta$", true, None)), "t.txt:2:Beta");
        assert_eq!(ok(grep("^beta$", false, None)), "no lines match \"^beta$\"");
        let capped = ok(grep("^hit", false, Some("many.txt")));
        assert!(capped.ends_with(&format!(
            "[truncated: {MAX_GREP_MATCHES} of {} matching lines shown]",
            MAX_GREP_MATCHES + 5
        )));
        assert!(err(grep("(", false, None)).contains("bad regex"));
    }

    #[test]
    fn requests_with_unknown_fields_are_rejected() {
        let r: Result<FileRequest, _> =
            serde_json::from_str(r#"{"op":"read","path":"a","follow":true}"#);
        assert!(r.is_err());
        let r: Result<FileRequest, _> = serde_json::from_str(r#"{"op":"chmod","path":"a"}"#);
        assert!(r.is_err());
    }
}
