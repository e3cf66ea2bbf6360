//! kache's native thin client: cargo's `RUSTC_WRAPPER` when a kache daemon runs.
//!
//! A hit served by the daemon costs the daemon about 3 ms, but a Python wrapper process
//! spends 20-25 ms starting before it can ask. This program (the standard library only,
//! built by `kache daemon client` with the rustc it finds) asks the daemon's socket for
//! the call (protocol 1, op `hit`, with `store: null`: the daemon reads the caller's
//! settings from the environment sent and answers only for its own store) and prints
//! rustc's recorded messages from the reply.
//!
//! The socket is found at run time, as kache finds the store: `cache.local_store` from the
//! environment, else the user's config file, else the system file (`KACHE_CONFIG`), else
//! `$XDG_CACHE_HOME/kache` or `~/.cache/kache`; `~` and `$VAR` expanded. The daemon checks
//! every request against the caller's own settings, so a socket found wrongly (a config
//! file this small reader misreads) costs a fallback, never a wrong answer.
//!
//! When the daemon declines a call but offers its runner (`"run": true` in the reply; Linux
//! only), the client hands the call to the runner, an already-started kache beside the
//! daemon (`run.sock` in the store), instead of starting Python for it: one request line
//! (op `run`: argv, cwd, environment, umask) carrying the
//! client's open descriptors (those an exec would pass on: stdin, stdout, stderr, cargo's
//! jobserver…) and, when the build runs in the terminal's foreground, the terminal. The
//! runner answers with the process the call runs in, then with how it ended, which the
//! client repeats: the same exit status, or death by the same signal. It installs no
//! signal handlers: when cargo kills it, the runner sees the connection close and stops
//! the call. A runner that refuses, cannot be reached or does not answer in time has run
//! nothing; one that dies while the call runs is waited for until that process is gone.
//! Either way the call then goes on as below.
//!
//! Anything else ends in running the `kache` it was built for with the same arguments,
//! as if this program were not there: no daemon, a daemon that does not answer in time,
//! a miss, a reply it cannot read, a panic. A daemon that took a request and did not
//! answer in time (or a runner that did not greet in time) is not asked again for
//! `STALL_SECS` by any client of the store: a stopped daemon costs one timeout, not one
//! per call. When the daemon did answer for its store,
//! that `kache` is told not to ask again (`cache.daemon_hits` off for the one call). If
//! even `kache` cannot be run, the compiler is run directly.
//!
//! The protocol's constants are in `wire.rs`, which `kache dev gen` writes from
//! kache/daemon/wire.py (the Python side of the protocol).

mod wire;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

use wire::{
    CONNECT_TIMEOUT, HIT_TIMEOUT, MAX_DEPTH, MAX_LINE, MAX_REPLY, RUN_SOCKET_NAME, SOCKET_NAME, STALLED_NAME, STALL_SECS,
    VERSION,
};

/// The `kache` program that handles whatever the daemon does not serve.
const KACHE: &str = env!("KACHE_CLIENT_KACHE");
/// The variable of `cache.daemon_hits`, from kache's schema.
const HITS_VARIABLE: &str = env!("KACHE_CLIENT_HITS_VARIABLE");
/// The variable of `cache.local_store`, from kache's schema.
const STORE_VARIABLE: &str = env!("KACHE_CLIENT_STORE_VARIABLE");
/// A config file longer than this is not read (kache then decides).
const MAX_CONFIG: u64 = 1 << 20;

/// `kache-client --kache-client-info` prints what it was built with (for `kache doctor`).
const INFO_FLAG: &str = "--kache-client-info";

enum Outcome {
    /// The daemon restored the outputs and its messages are printed: done.
    Served,
    /// The daemon answered for its own store that it does not serve this call; with the
    /// path of its runner's socket when it offered to run the call there.
    Declined(Option<PathBuf>),
    /// The daemon was not asked, or gave no usable answer.
    NotAsked,
}

fn main() {
    let started = Instant::now();
    std::panic::set_hook(Box::new(|_| {})); // stderr is rustc's, which cargo reads
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.len() == 1 && args[0] == INFO_FLAG {
        std::process::exit(if info() { 0 } else { 1 });
    }
    let asked = match std::panic::catch_unwind(|| serve(&args, started)) {
        Ok(Outcome::Served) => std::process::exit(0),
        Ok(Outcome::Declined(runner)) => {
            if let Some(socket) = runner {
                run_by_runner(&socket, &args, started); // returns only when kache is to run the call
            }
            true
        }
        Ok(Outcome::NotAsked) | Err(_) => false,
    };
    fall_back(&args, asked)
}

/// `{"kache": …, "socket": …, "hits_variable": …}` and a newline on stdout.
fn info() -> bool {
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"kache\":");
    json_text(&mut out, OsStr::new(KACHE));
    out.extend_from_slice(b",\"socket\":");
    json_text(&mut out, socket_path().unwrap_or_default().as_os_str());
    out.extend_from_slice(b",\"hits_variable\":");
    json_text(&mut out, OsStr::new(HITS_VARIABLE));
    out.extend_from_slice(b"}\n");
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out).is_ok() && stdout.flush().is_ok()
}

fn serve(args: &[OsString], started: Instant) -> Outcome {
    // The daemon serves a compiler named by an absolute path, without @argfiles (it would
    // read either relative to itself): anything else goes straight to kache.
    match args.first() {
        Some(compiler) if compiler.as_bytes().first() == Some(&b'/') => {}
        _ => return Outcome::NotAsked,
    }
    if args.iter().any(|a| a.as_bytes().first() == Some(&b'@')) {
        return Outcome::NotAsked;
    }
    let Some(store) = store_path() else { return Outcome::NotAsked };
    if stalled(&store) {
        return Outcome::NotAsked; // kache sees the same file and does not ask either
    }
    let Some(mut stream) = connect(&store.join(SOCKET_NAME)) else { return Outcome::NotAsked };
    let Some(request) = request(args, started, &Op::Hit) else { return Outcome::NotAsked };
    if request.len() > MAX_LINE + 1 || stream.write_all(&request).is_err() {
        return Outcome::NotAsked;
    }
    let asked = Instant::now();
    let Some(line) = read_line(&mut stream, &mut Vec::new(), MAX_REPLY) else {
        if asked.elapsed() >= HIT_TIMEOUT {
            note_stall(&store); // accepted and did not answer: the next calls do not wait too
        }
        return Outcome::NotAsked;
    };
    drop(stream);
    let Some(reply) = Reader::new(&line).reply() else { return Outcome::NotAsked };
    let field = |name: &str| reply.iter().find(|(k, _)| k.as_slice() == name.as_bytes()).map(|(_, v)| v);
    if !matches!(field("ok"), Some(Value::Bool(true))) {
        return Outcome::NotAsked; // an error (busy, an older protocol): kache asks itself
    }
    match (field("hit"), field("stdout"), field("stderr")) {
        (Some(Value::Bool(true)), Some(Value::Str(out)), Some(Value::Str(err))) => {
            if print(out, err) {
                Outcome::Served
            } else {
                Outcome::Declined(None) // cargo stopped reading: kache decides what is left
            }
        }
        (Some(Value::Bool(false)), _, _) => match field("why") {
            Some(Value::Str(why)) if why.as_slice() == b"another store" => Outcome::NotAsked,
            _ => Outcome::Declined(
                matches!(field("run"), Some(Value::Bool(true))).then(|| store.join(RUN_SOCKET_NAME)),
            ),
        },
        _ => Outcome::NotAsked,
    }
}

/// Whether a daemon of `store` (or its runner) failed to answer in the last `STALL_SECS`:
/// the file `STALLED_NAME` is that recent (kache.wrapper.daemon_hit.stalled reads the same).
fn stalled(store: &Path) -> bool {
    match std::fs::metadata(store.join(STALLED_NAME)).and_then(|m| m.modified()) {
        Ok(at) => at.elapsed().map_or(true, |age| age < STALL_SECS), // a time ahead: recent
        Err(_) => false,
    }
}

/// Say that the daemon of `store` (or its runner) accepted a request and did not answer in
/// time (kache.wrapper.daemon_hit.note_stall): the directory owner-only, the file too.
fn note_stall(store: &Path) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let file = store.join(STALLED_NAME);
    if let Some(dir) = file.parent() {
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
    }
    let _ = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&file);
}

/// Connect to `socket` within `CONNECT_TIMEOUT` (`UnixStream` has no connect timeout, and a
/// daemon that is stopped lets connections queue until its backlog is full, then blocks them).
fn connect(socket: &Path) -> Option<UnixStream> {
    let socket = socket.to_path_buf();
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .spawn(move || {
            let _ = sender.send(UnixStream::connect(socket));
        })
        .ok()?;
    let stream = receiver.recv_timeout(CONNECT_TIMEOUT).ok()?.ok()?;
    stream.set_read_timeout(Some(HIT_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(HIT_TIMEOUT)).ok()?;
    Some(stream)
}

/// What a request asks of the daemon, besides the call.
enum Op<'a> {
    /// Serve the call from the store: `"op":"hit","store":null`.
    Hit,
    /// Run the call (the runner): `"op":"run"`, the environment as it is (the runner's
    /// child does not ask the daemon again), and at the end the descriptors sent with the
    /// line (`"fds"`, their numbers in this process) and whether the terminal follows them
    /// (`"tty"`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Run { fds: &'a [i32], tty: bool },
}

/// `{"v":1,"op":"hit","store":null,"argv":[…],"cwd":…,"env":{…},"umask":…,"client_ms":…}`
/// and a newline (for `Op::Run`, `"op":"run"` without `store`, and `"fds":[…],"tty":…`
/// after `client_ms`). Texts that are not UTF-8 carry each undecodable byte as `\udcXX`, as
/// Python's `surrogateescape` reads them (and as the Python client sends them).
fn request(args: &[OsString], started: Instant, op: &Op) -> Option<Vec<u8>> {
    let cwd = std::env::current_dir().ok()?;
    let mut out = Vec::with_capacity(16 * 1024);
    match op {
        Op::Hit => write!(out, "{{\"v\":{VERSION},\"op\":\"hit\",\"store\":null,\"argv\":["),
        Op::Run { .. } => write!(out, "{{\"v\":{VERSION},\"op\":\"run\",\"argv\":["),
    }
    .ok()?;
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_text(&mut out, arg);
    }
    out.extend_from_slice(b"],\"cwd\":");
    json_text(&mut out, cwd.as_os_str());
    out.extend_from_slice(b",\"env\":{");
    let mut seen = HashSet::new();
    for (name, value) in std::env::vars_os() {
        if !seen.insert(name.clone()) {
            continue; // a name twice in environ: Python's os.environ keeps the first
        }
        if seen.len() > 1 {
            out.push(b',');
        }
        json_text(&mut out, &name);
        out.push(b':');
        json_text(&mut out, &value);
    }
    let client_ms = started.elapsed().as_secs_f64() * 1000.0;
    write!(out, "}},\"umask\":{},\"client_ms\":{:.3}", current_umask(), client_ms).ok()?;
    if let Op::Run { fds, tty } = op {
        out.extend_from_slice(b",\"fds\":[");
        for (i, fd) in fds.iter().enumerate() {
            write!(out, "{}{fd}", if i > 0 { "," } else { "" }).ok()?;
        }
        write!(out, "],\"tty\":{tty}").ok()?;
    }
    out.extend_from_slice(b"}\n");
    Some(out)
}

/// `<local_store>/daemon.sock` of the settings in effect (see the top of this file).
fn socket_path() -> Option<PathBuf> {
    store_path().map(|store| store.join(SOCKET_NAME))
}

/// `cache.local_store` of the settings in effect (see the top of this file); absolute.
fn store_path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let home = var("HOME").map(PathBuf::from)?;
    let from_env = var(STORE_VARIABLE).map(|v| v.to_string_lossy().into_owned());
    let user_file = match var("XDG_CONFIG_HOME").map(PathBuf::from).filter(|p| p.is_absolute()) {
        Some(base) => base.join("kache/config.toml"),
        None => home.join(".config/kache/config.toml"),
    };
    let system_file = var("KACHE_CONFIG").map(|v| expand(v.to_string_lossy().trim(), &home));
    let store = from_env
        .or_else(|| configured_store(&user_file))
        .or_else(|| system_file.and_then(|f| configured_store(Path::new(&f))));
    let store = match store {
        Some(raw) => PathBuf::from(expand(&raw, &home)),
        None => default_cache_dir()?,
    };
    store.is_absolute().then_some(store)
}

/// `$XDG_CACHE_HOME/kache`, else `~/.cache/kache` (kache.settings.default_cache_dir).
fn default_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    match var("XDG_CACHE_HOME").map(PathBuf::from).filter(|p| p.is_absolute()) {
        Some(base) => Some(base.join("kache")),
        None => var("HOME").map(|home| PathBuf::from(home).join(".cache/kache")),
    }
}

/// `~`, `~/…`, `$VAR` and `${VAR}` as kache expands them (an unknown variable stays).
fn expand(raw: &str, home: &Path) -> String {
    let mut text = if raw == "~" || raw.starts_with("~/") {
        format!("{}{}", home.display(), &raw[1..])
    } else {
        raw.to_string()
    };
    let mut out = String::with_capacity(text.len());
    while let Some(at) = text.find('$') {
        out.push_str(&text[..at]);
        let rest = &text[at + 1..];
        let (name, used) = if let Some(inner) = rest.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            (&rest[..end], end)
        };
        match std::env::var(name).ok().filter(|_| !name.is_empty()) {
            Some(value) => out.push_str(&value),
            None => out.push_str(&text[at..at + 1 + used]),
        }
        text = text[at + 1 + used..].to_string();
    }
    out.push_str(&text);
    out
}

/// `cache.local_store` of a TOML file: `local_store = "…"` under `[cache]`, or
/// `cache.local_store = "…"` at the top; basic or literal one-line strings. None when the
/// file is absent, too long, or says it otherwise (kache reads it properly then).
fn configured_store(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(MAX_CONFIG).read_to_string(&mut text).ok()?;
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            table = match header.split_once(']') {
                Some((name, _)) if !name.starts_with('[') => name.replace([' ', '\t', '"'], ""),
                _ => "[array]".to_string(), // [[…]] or a header this reader does not follow
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = key.trim().replace([' ', '\t', '"'], "");
        let full = if table.is_empty() { key } else { format!("{table}.{key}") };
        if full == "cache.local_store" {
            return toml_string(value.trim());
        }
    }
    None
}

fn toml_string(value: &str) -> Option<String> {
    if let Some(rest) = value.strip_prefix('\'') {
        return rest.find('\'').map(|end| rest[..end].to_string());
    }
    let rest = value.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                _ => return None, // rarer escapes: kache reads the file properly
            },
            _ => out.push(c),
        }
    }
    None
}

fn json_text(out: &mut Vec<u8>, text: &OsStr) {
    out.push(b'"');
    for chunk in text.as_bytes().utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0..=0x1f => {
                    let _ = write!(out, "\\u{:04x}", b);
                }
                _ => out.push(b),
            }
        }
        for &b in chunk.invalid() {
            let _ = write!(out, "\\udc{:02x}", b);
        }
    }
    out.push(b'"');
}

#[cfg(any(target_os = "linux", target_os = "android"))]
type Mode = u32;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
type Mode = u16;

extern "C" {
    fn umask(mask: Mode) -> Mode;
    fn tcgetpgrp(fd: i32) -> i32;
    fn getpgrp() -> i32;
    fn localtime_r(time: *const i64, tm: *mut Tm) -> *mut Tm;
}

/// C's `struct tm` (Linux and macOS: nine ints, then `tm_gmtoff` and `tm_zone`).
#[repr(C)]
struct Tm {
    sec: i32,
    min: i32,
    hour: i32,
    mday: i32,
    mon: i32,
    year: i32,
    wday: i32,
    yday: i32,
    isdst: i32,
    gmtoff: std::os::raw::c_long,
    zone: *const u8,
}

/// This process's umask (the daemon gives the files it creates the modes it gives).
fn current_umask() -> u32 {
    // SAFETY: umask(2) cannot fail; the mask is put back at once, and the only other
    // thread (the connect) creates no files.
    unsafe {
        let mask = umask(0o022);
        umask(mask);
        u32::from(mask)
    }
}

/// The next line from `stream`, its newline included, at most `limit` bytes besides it;
/// what was read past it stays in `pending` for the next call. None at the end of the
/// stream, past the limit, after a read error or when the stream's read timeout passes.
fn read_line(stream: &mut UnixStream, pending: &mut Vec<u8>, limit: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = [0u8; 64 * 1024];
    let mut scanned = 0;
    loop {
        if let Some(at) = pending[scanned..].iter().position(|&b| b == b'\n') {
            let end = scanned + at + 1;
            if end > limit + 1 {
                return None;
            }
            let rest = pending.split_off(end);
            return Some(std::mem::replace(pending, rest));
        }
        scanned = pending.len();
        if scanned > limit {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

fn print(out: &[u8], err: &[u8]) -> bool {
    let written = |mut stream: Box<dyn Write>, bytes: &[u8]| {
        bytes.is_empty() || (stream.write_all(bytes).is_ok() && stream.flush().is_ok())
    };
    written(Box::new(std::io::stdout().lock()), out) && written(Box::new(std::io::stderr().lock()), err)
}

/// Hand the call to the daemon's runner at `socket` and end as the call ends there. Returns
/// when nothing ran there, or when what ran is gone without an answer (the runner died):
/// kache runs the call then.
#[cfg(target_os = "linux")]
fn run_by_runner(socket: &Path, args: &[OsString], started: Instant) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let Ok(Some((stream, pending, pid))) = catch_unwind(AssertUnwindSafe(|| runner::start(socket, args, started)))
    else {
        return;
    };
    let _ = catch_unwind(AssertUnwindSafe(|| runner::finish(stream, pending, pid))); // exits when told how it ended
    runner::wait_gone(pid);
}

/// The runner takes descriptors as Linux passes them (`SCM_RIGHTS`): elsewhere kache runs.
#[cfg(not(target_os = "linux"))]
fn run_by_runner(_socket: &Path, _args: &[OsString], _started: Instant) {
    let _ = wire::MAX_RUN_FDS; // used on Linux
}

/// The runner's protocol (op `run`): descriptors over the socket, with the C library's
/// calls and the Linux layouts of their structures (the standard library has no
/// `sendmsg`, and the client uses no crates).
#[cfg(target_os = "linux")]
mod runner {
    use super::*;
    use std::fs::File;
    use std::mem::size_of;
    use std::os::fd::AsRawFd;
    use wire::{MAX_RUN_FDS, RUN_READY_TIMEOUT};

    const SOL_SOCKET: i32 = 1;
    const SCM_RIGHTS: i32 = 1;
    const MSG_NOSIGNAL: i32 = 0x4000;
    const F_GETFD: i32 = 1;
    const FD_CLOEXEC: i32 = 1;
    const SIG_DFL: usize = 0;
    #[cfg(any(target_arch = "mips", target_arch = "mips64"))]
    const O_NOCTTY: i32 = 0o4000;
    #[cfg(target_arch = "sparc64")]
    const O_NOCTTY: i32 = 0o100000;
    #[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
    const O_NOCTTY: i32 = 0o400;
    /// How often the client looks whether the call's process is gone, once the runner died.
    const POLL: std::time::Duration = std::time::Duration::from_millis(20);
    /// How often, while waiting for the call's end, the client looks whether its process ended.
    const STATUS_POLL: std::time::Duration = std::time::Duration::from_millis(200);
    /// How long after the call's process ended the client waits for the runner to say how.
    const STATUS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

    #[repr(C)]
    struct IoVec {
        base: *const u8,
        len: usize,
    }

    #[repr(C)]
    struct MsgHdr {
        name: *mut u8,
        namelen: u32,
        iov: *const IoVec,
        iovlen: usize,
        control: *mut u8,
        controllen: usize,
        flags: i32,
    }

    #[repr(C)]
    struct CmsgHdr {
        len: usize,
        level: i32,
        kind: i32,
    }

    extern "C" {
        fn sendmsg(fd: i32, msg: *const MsgHdr, flags: i32) -> isize;
        fn fcntl(fd: i32, cmd: i32, ...) -> i32;
        fn signal(signum: i32, handler: usize) -> usize;
        fn kill(pid: i32, sig: i32) -> i32;
        fn getpid() -> i32;
    }

    /// CMSG_ALIGN: control data is laid out in units of `size_t`.
    fn align(len: usize) -> usize {
        (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
    }

    /// Ask the runner to run the call. The process the call runs in, with the connection
    /// and what was read past the reply; None when nothing ran.
    pub(super) fn start(socket: &Path, args: &[OsString], started: Instant) -> Option<(UnixStream, Vec<u8>, i32)> {
        let mut fds = inherited()?;
        if fds.len() > MAX_RUN_FDS {
            return None;
        }
        let tty = terminal();
        let mut stream = connect(socket)?;
        let request = request(args, started, &Op::Run { fds: &fds, tty: tty.is_some() })?;
        if request.len() > MAX_LINE + 1 {
            return None;
        }
        // The descriptors go only to a runner that reads: queued to one that is stopped,
        // they would keep cargo's pipes open after this client has run the call itself.
        let mut pending = Vec::new();
        stream.set_read_timeout(Some(RUN_READY_TIMEOUT)).ok()?;
        let asked = Instant::now();
        let Some(ready) = read_line(&mut stream, &mut pending, MAX_LINE) else {
            if asked.elapsed() >= RUN_READY_TIMEOUT {
                socket.parent().map(note_stall); // stopped: the next calls go to kache at once
            }
            return None;
        };
        let greeting = Reader::new(&ready).reply()?;
        let said = |name: &str| greeting.iter().any(|(k, v)| k.as_slice() == name.as_bytes()
                                                    && matches!(v, Value::Bool(true)));
        if !(said("ok") && said("ready")) {
            return None;
        }
        stream.set_read_timeout(Some(HIT_TIMEOUT)).ok()?;
        fds.extend(tty.as_ref().map(File::as_raw_fd));
        send(&stream, &request, &fds)?;
        drop(tty);
        let line = read_line(&mut stream, &mut pending, MAX_LINE)?;
        let reply = Reader::new(&line).reply()?;
        let field = |name: &str| reply.iter().find(|(k, _)| k.as_slice() == name.as_bytes()).map(|(_, v)| v);
        match (field("ok"), field("pid")) {
            (Some(Value::Bool(true)), Some(&Value::Int(pid))) if pid > 0 && pid <= i64::from(i32::MAX) => {
                Some((stream, pending, pid as i32))
            }
            _ => None, // {"ok":false,"why":…}: nothing ran
        }
    }

    /// Wait, without a time limit, for how the call ended, and end the same way: exit with
    /// its status, or die of its signal. Returns when the runner did not say (it died).
    ///
    /// The runner says how the call ended once it reaps the call's process `pid`. A runner
    /// that does not (stopped) while that process has ended, for `STATUS_GRACE`, gets no
    /// longer wait: the call is run again (kache, after this returns).
    pub(super) fn finish(mut stream: UnixStream, mut pending: Vec<u8>, pid: i32) {
        use std::io::Read;
        if stream.set_read_timeout(Some(STATUS_POLL)).is_err() {
            return;
        }
        let mut ended_at: Option<Instant> = None;
        let mut buf = [0u8; 4096];
        let line = loop {
            if let Some(at) = pending.iter().position(|&b| b == b'\n') {
                break pending[..=at].to_vec();
            }
            if pending.len() > MAX_LINE {
                return;
            }
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                              | std::io::ErrorKind::Interrupted) => {
                    if !running(pid) && ended_at.get_or_insert_with(Instant::now).elapsed() > STATUS_GRACE {
                        return;
                    }
                }
                Err(_) => return,
            }
        };
        let Some(reply) = Reader::new(&line).reply() else { return };
        let field = |name: &str| reply.iter().find(|(k, _)| k.as_slice() == name.as_bytes()).map(|(_, v)| v);
        if !matches!(field("ok"), Some(Value::Bool(true))) {
            return;
        }
        match (field("status"), field("signal")) {
            (Some(&Value::Int(status)), None) if (0..=255).contains(&status) => std::process::exit(status as i32),
            (None, Some(&Value::Int(signum))) if (1..=64).contains(&signum) => die_of(signum as i32),
            _ => {}
        }
    }

    /// Die of `signum`, as the call's process did (cargo reports the signal); exit
    /// 128 + `signum` when it does not kill (its default action is to ignore it).
    fn die_of(signum: i32) -> ! {
        // SAFETY: plain calls; SIG_DFL is the default action (Rust ignores SIGPIPE).
        unsafe {
            signal(signum, SIG_DFL);
            kill(getpid(), signum);
        }
        std::process::exit(128 + signum)
    }

    /// Return once process `pid` is gone or has ended (a zombie no one reaped yet): the
    /// runner died while the call ran in it, and the call's outputs are its own until then.
    pub(super) fn wait_gone(pid: i32) {
        while running(pid) {
            std::thread::sleep(POLL);
        }
    }

    /// Whether process `pid` still runs (not gone, not a zombie waiting to be reaped).
    fn running(pid: i32) -> bool {
        let Ok(text) = std::fs::read(format!("/proc/{pid}/stat")) else { return false };
        let state = text.iter().rposition(|&b| b == b')').and_then(|at| text.get(at + 2)); // after "(comm) "
        state.is_some_and(|&s| s != b'Z' && s != b'X')
    }

    /// The descriptors an exec would pass on (open, not close-on-exec), ascending; None
    /// when they cannot be listed.
    fn inherited() -> Option<Vec<i32>> {
        // the directory's own descriptor is in the list, and closed before the check
        let names = std::fs::read_dir("/proc/self/fd").ok()?.map(|e| e.map(|e| e.file_name()));
        let names: Vec<OsString> = names.collect::<Result<_, _>>().ok()?;
        let mut fds = Vec::with_capacity(names.len());
        for name in names {
            let fd: i32 = name.to_str()?.parse().ok()?;
            // SAFETY: F_GETFD only reads the descriptor's flags (-1 when it is not open).
            let flags = unsafe { fcntl(fd, F_GETFD) };
            if flags >= 0 && flags & FD_CLOEXEC == 0 {
                fds.push(fd);
            }
        }
        fds.sort_unstable();
        Some(fds)
    }

    /// The terminal, when the build runs in its foreground (the rule of `warn_once`).
    fn terminal() -> Option<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let tty = std::fs::OpenOptions::new().write(true).custom_flags(O_NOCTTY).open("/dev/tty").ok()?;
        // SAFETY: plain calls on a descriptor this function owns.
        (unsafe { tcgetpgrp(tty.as_raw_fd()) == getpgrp() }).then_some(tty)
    }

    /// Send `line` with `fds` as one `SCM_RIGHTS` message on its first part.
    fn send(mut stream: &UnixStream, line: &[u8], fds: &[i32]) -> Option<()> {
        let header = align(size_of::<CmsgHdr>());
        let data = std::mem::size_of_val(fds);
        let space = header + align(data);
        let mut control = vec![0usize; space / size_of::<usize>()]; // aligned for a cmsghdr
        let base = control.as_mut_ptr().cast::<u8>();
        // SAFETY: `control` holds `space` bytes: the header, then the descriptors' ints.
        unsafe {
            base.cast::<CmsgHdr>().write(CmsgHdr { len: header + data, level: SOL_SOCKET, kind: SCM_RIGHTS });
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), base.add(header), data);
        }
        let iov = IoVec { base: line.as_ptr(), len: line.len() };
        let (rights, controllen) = if fds.is_empty() { (std::ptr::null_mut(), 0) } else { (base, space) };
        let msg = MsgHdr { name: std::ptr::null_mut(), namelen: 0, iov: &iov, iovlen: 1, control: rights, controllen,
                           flags: 0 };
        let sent = loop {
            // SAFETY: `msg` points at `iov` and the control data, alive for the call.
            let n = unsafe { sendmsg(stream.as_raw_fd(), &msg, MSG_NOSIGNAL) };
            if n > 0 {
                break n as usize;
            }
            if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return None;
            }
        };
        stream.write_all(&line[sent..]).ok()
    }
}

fn fall_back(args: &[OsString], asked: bool) -> ! {
    let mut kache = Command::new(KACHE);
    kache.args(args);
    if asked {
        kache.env(HITS_VARIABLE, "0");
    }
    let error = kache.exec();
    warn_once(&format!("kache: warning: cannot run {KACHE}: {error}; running rustc directly\n"));
    if let Some(compiler) = args.first() {
        let error = Command::new(compiler).args(&args[1..]).exec();
        let _ = writeln!(std::io::stderr(), "kache: error: cannot run {}: {error}", compiler.to_string_lossy());
    }
    std::process::exit(127)
}

/// How long a warning stays said for a caller whose build cannot be told apart (as
/// kache.engine.notices.WARN_INTERVAL_SECS).
const WARN_INTERVAL_SECS: u64 = 600;

/// Say a warning once per build, as kache.engine.notices.warn_once does: claim a stamp
/// `<default cache dir>/tmp/warned/native-fallback.<build>` (cargo's pid and start time),
/// then write the line to `kache.log` in the store and, when the build runs in the
/// terminal's foreground, to the terminal. Never on rustc's stderr: cargo would keep the
/// line with the unit and replay it on every later build. Never to a terminal the build
/// is in the background of: under `stty tostop` the write would stop the build (SIGTTOU).
fn warn_once(line: &str) {
    if !claim() {
        return;
    }
    let logged = store_path().is_some_and(|store| append_log(&store, line));
    if !logged {
        if let Some(default) = default_cache_dir() {
            append_log(&default, line);
        }
    }
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
        use std::os::fd::AsRawFd;
        // SAFETY: plain calls on a descriptor this function owns.
        if unsafe { tcgetpgrp(tty.as_raw_fd()) == getpgrp() } {
            let _ = tty.write_all(line.as_bytes());
        }
    }
}

/// Whether this call is the first of its build to say the warning (parallel calls race
/// for the stamp; `create_new` is O_EXCL). Without a build to tell apart (no parent, no
/// start time of it), once in `WARN_INTERVAL_SECS`. Nowhere to remember: say it.
fn claim() -> bool {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let Some(default) = default_cache_dir() else { return true };
    let ppid = std::os::unix::process::parent_id();
    let start = std::fs::read(format!("/proc/{ppid}/stat")).ok().and_then(|stat| {
        // after "(comm)": the state is field 3, the start time field 22
        let at = stat.iter().rposition(|&b| b == b')')?;
        let rest = String::from_utf8_lossy(&stat[at + 1..]).into_owned();
        rest.split_whitespace().nth(19).map(str::to_string)
    });
    let (name, by_time) = match (ppid, start) {
        (0 | 1, _) => ("native-fallback".to_string(), true),
        (ppid, Some(start)) => (format!("native-fallback.{ppid}-{start}"), false),
        (ppid, None) => (format!("native-fallback.{ppid}"), true),
    };
    let dir = default.join("tmp/warned");
    let stamp = dir.join(name);
    let create = || std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&stamp);
    for _ in 0..2 {
        match create() {
            Ok(_) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let recent = std::fs::metadata(&stamp)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() < WARN_INTERVAL_SECS);
                if !by_time || recent || std::fs::remove_file(&stamp).is_err() {
                    return false;
                }
            }
            Err(_) => {
                if std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).is_err() {
                    return true;
                }
            }
        }
    }
    false
}

/// Append `<local time> <line>` to `<directory>/kache.log` (as kache.engine.notices does).
fn append_log(directory: &Path, line: &str) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut tm = Tm { sec: 0, min: 0, hour: 0, mday: 0, mon: 0, year: 0, wday: 0, yday: 0, isdst: 0, gmtoff: 0,
                      zone: std::ptr::null() };
    // SAFETY: localtime_r writes only into `tm`, a struct tm of the C layout.
    if unsafe { localtime_r(&now, &mut tm) }.is_null() {
        return false;
    }
    let stamp = format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", tm.year + 1900, tm.mon + 1, tm.mday, tm.hour, tm.min,
                        tm.sec);
    let opened = std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(directory.join("kache.log"));
    opened.and_then(|mut log| log.write_all(format!("{stamp} {line}").as_bytes())).is_ok()
}

/// What the reply reader keeps of a value.
enum Value {
    Str(Vec<u8>),
    Bool(bool),
    /// A number written as a whole one (no fraction, no exponent) that fits.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Int(i64),
    Other,
}

/// A reader for the daemon's reply line: one JSON object (RFC 8259), whose texts come
/// back as bytes, `\udcXX` (lone, 80-FF) read as the byte it stands for.
struct Reader<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a [u8]) -> Self {
        Reader { text, at: 0 }
    }

    fn reply(mut self) -> Option<Vec<(Vec<u8>, Value)>> {
        self.space();
        self.expect(b'{')?;
        let fields = self.object(1)?;
        self.space();
        (self.at == self.text.len()).then_some(fields)
    }

    /// The members of an object whose `{` is read, their values read at `depth`.
    fn object(&mut self, depth: usize) -> Option<Vec<(Vec<u8>, Value)>> {
        let mut fields = Vec::new();
        self.space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Some(fields);
        }
        loop {
            self.space();
            self.expect(b'"')?;
            let name = self.string()?;
            self.space();
            self.expect(b':')?;
            let value = self.value(depth)?;
            fields.push((name, value));
            self.space();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(fields),
                _ => return None,
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.text.get(self.at..end)? == word).then(|| self.at = end)
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        self.space();
        match self.next()? {
            b'"' => self.string().map(Value::Str),
            b't' => self.word(b"rue").map(|_| Value::Bool(true)),
            b'f' => self.word(b"alse").map(|_| Value::Bool(false)),
            b'n' => self.word(b"ull").map(|_| Value::Other),
            b'-' | b'0'..=b'9' => {
                let start = self.at - 1;
                while matches!(self.peek(), Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')) {
                    self.at += 1;
                }
                let number = &self.text[start..self.at];
                let whole = number.iter().skip(1).all(u8::is_ascii_digit);
                let int = std::str::from_utf8(number).ok().filter(|_| whole).and_then(|n| n.parse().ok());
                Some(int.map_or(Value::Other, Value::Int))
            }
            b'{' if depth < MAX_DEPTH => self.object(depth + 1).map(|_| Value::Other),
            b'[' if depth < MAX_DEPTH => {
                self.space();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Some(Value::Other);
                }
                loop {
                    self.value(depth + 1)?;
                    self.space();
                    match self.next()? {
                        b',' => continue,
                        b']' => return Some(Value::Other),
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }

    /// The rest of a string whose opening quote is read.
    fn string(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            match self.next()? {
                b'"' => return Some(out),
                b'\\' => match self.next()? {
                    b'"' => out.push(b'"'),
                    b'\\' => out.push(b'\\'),
                    b'/' => out.push(b'/'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'u' => self.escape(&mut out)?,
                    _ => return None,
                },
                0..=0x1f => return None,
                b => out.push(b),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let unit = self.hex4()?;
        let code = match unit {
            0xD800..=0xDBFF => {
                self.word(b"\\u")?;
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return None;
                }
                0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
            }
            0xDC80..=0xDCFF => {
                out.push((unit & 0xFF) as u8); // surrogateescape: a byte that was not UTF-8
                return Some(());
            }
            0xDC00..=0xDFFF => return None,
            _ => unit,
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(char::from_u32(code)?.encode_utf8(&mut buf).as_bytes());
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let end = self.at.checked_add(4)?;
        let digits = std::str::from_utf8(self.text.get(self.at..end)?).ok()?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.at = end;
        u32::from_str_radix(digits, 16).ok()
    }
}
