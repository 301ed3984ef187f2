//! Part leases: which process may write a part of a cell, safe on storage shared between nodes.
//!
//! A lease is a small JSON file (`part-K-of-N.lock` next to the part's checkpoint) naming the
//! holder's host, boot, PID namespace, PID and process start time, when it was taken and last
//! renewed, and the holder's timeout. A background thread renews it every quarter timeout while
//! the part works; a lease is **stale** when it was not renewed within its holder's timeout, or
//! at once when the holder ran on this very machine (same host, boot and PID namespace) and its
//! process is gone. A stale lease is taken over; a live one never is.
//!
//! Why this is race-free on NFS-like storage (only `link`, `rename` and whole-file reads are used,
//! each atomic on the server):
//! - **Taking a free lease**: the record is written to a file of a unique name, then hard-linked
//!   to the lease name. `link(2)` fails with EEXIST when the name exists, atomically, also over
//!   NFS (the lock-file method `open(2)` recommends, where `O_EXCL` is not reliable); the lease
//!   appears complete, never torn or empty. If a retransmitted `link` reports EEXIST although it
//!   succeeded, reading the lease back finds our own token.
//! - **Renewing**: a new record under a unique name is renamed over the lease; readers see the old
//!   or the new record. The holder renews only after checking that the lease still holds its
//!   token, and stops (the lease is *lost*) once it has not renewed within its own timeout, so it
//!   cannot overwrite a lease that others could already see as stale.
//! - **Taking over a stale lease**: the contender first takes the lease's *breaker*
//!   (`NAME.break`, linked the same way), so that of several contenders exactly one removes a
//!   stale lease. Holding it, it re-reads the lease and removes it only if it is byte for byte the
//!   record it judged stale, then starts over like a fresh acquirer. While a lease file exists
//!   nothing but its holder's renewal can replace it (links fail on an existing name), so the
//!   re-read cannot be outdated by another contender. The removal itself renames the file to a
//!   name of the remover's and compares again (a stale breaker, left by a contender killed within
//!   those milliseconds, is cleared the same way; a wrong move is linked back).
//! - **Fencing**: the holder checks that the lease still holds its token before every checkpoint
//!   ([`Lease::check`]); a holder that lost its lease (suspended, partitioned, clock jumped) stops
//!   without writing. Checkpoints are written to new names and renamed into place, so even the
//!   narrow window between that check and the write leaves consistent files.
//!
//! Staleness across machines compares the holder's wall clock (in the record) with the reader's:
//! renewals come every quarter timeout, so clock skew up to three quarters of the timeout is
//! tolerated. Choose the timeout above the storage's attribute-cache delay (NFS `actimeo`).
use crate::{BenchError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a lease stays live without renewal unless `--lease-timeout` or
/// `BENCH_LEASE_TIMEOUT` says otherwise: long enough for NFS attribute caches (≤ 60 s) and
/// clock skew, short enough that a task requeued after its node died waits only minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Environment variable with the lease timeout in seconds.
pub const TIMEOUT_ENV: &str = "BENCH_LEASE_TIMEOUT";

/// How this process takes and holds leases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseConfig {
    /// A lease this process holds is stale when not renewed for this long (renewed every quarter).
    pub timeout: Duration,
    /// Wait for a live lease of another process to be released or to expire instead of
    /// reporting the part as locked.
    pub wait: bool,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { timeout: DEFAULT_TIMEOUT, wait: false }
    }
}

impl LeaseConfig {
    /// The CLI's choice, else `BENCH_LEASE_TIMEOUT`, else [`DEFAULT_TIMEOUT`].
    pub fn resolve(timeout: Option<Duration>, wait: bool) -> Result<LeaseConfig> {
        let timeout = match timeout {
            Some(t) => t,
            None => match std::env::var(TIMEOUT_ENV) {
                Ok(s) => parse_timeout(&s).map_err(|e| BenchError::user(format!("{TIMEOUT_ENV}: {e}")))?,
                Err(_) => DEFAULT_TIMEOUT,
            },
        };
        Ok(LeaseConfig { timeout, wait })
    }
}

/// Seconds (e.g. `120`, `2.5`), at least 1.
pub fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (1.0..=86_400.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("lease timeout {s:?}: expected seconds between 1 and 86400, e.g. 120")),
    }
}

static CONFIG: OnceLock<LeaseConfig> = OnceLock::new();

/// Sets the process-wide lease configuration (the CLI, once, before any lease is taken).
pub fn configure(config: LeaseConfig) {
    let _ = CONFIG.set(config);
}

/// The configured lease settings, else those of the environment, else the defaults.
pub fn config() -> LeaseConfig {
    *CONFIG.get_or_init(|| LeaseConfig::resolve(None, false).unwrap_or_default())
}

/// Where a process runs. Two records with equal host, boot and PID namespace can compare PIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub host: String,
    pub boot_id: String,
    pub pid_ns: String,
}

impl Machine {
    pub fn current() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
        let mut host = read("/proc/sys/kernel/hostname");
        if host.is_empty() {
            host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into());
        }
        let pid_ns = std::fs::read_link("/proc/self/ns/pid").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        Machine { host, boot_id: read("/proc/sys/kernel/random/boot_id"), pid_ns }
    }
    /// Same host, boot and PID namespace: a PID in a record names a process we can look at.
    fn same_as(&self, r: &LeaseRecord) -> bool {
        !self.boot_id.is_empty() && !self.pid_ns.is_empty() && (r.host == self.host && r.boot_id == self.boot_id && r.pid_ns == self.pid_ns)
    }
}

/// The content of a lease file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub host: String,
    pub pid: u32,
    /// The holder process's start time in clock ticks since boot (`/proc/PID/stat` field 22):
    /// tells a live holder from a later process that reuses its PID.
    pub process_start: Option<u64>,
    pub boot_id: String,
    pub pid_ns: String,
    /// When this holder took the lease (Unix milliseconds, holder's clock).
    pub started_unix_ms: u64,
    /// Last renewal (Unix milliseconds, holder's clock).
    pub renewed_unix_ms: u64,
    /// The holder's timeout: stale when `now - renewed` exceeds it.
    pub timeout_ms: u64,
    /// Unique per acquisition: tells this holder's lease from any other.
    pub token: String,
}

impl LeaseRecord {
    /// A record for the current process, renewed now.
    pub fn current(token: &str, timeout: Duration) -> LeaseRecord {
        let m = Machine::current();
        let now = unix_ms();
        LeaseRecord {
            host: m.host,
            pid: std::process::id(),
            process_start: process_start(std::process::id()),
            boot_id: m.boot_id,
            pid_ns: m.pid_ns,
            started_unix_ms: now,
            renewed_unix_ms: now,
            timeout_ms: timeout.as_millis() as u64,
            token: token.to_string(),
        }
    }
    pub fn holder(&self) -> Holder {
        Holder { pid: self.pid, host: Some(self.host.clone()) }
    }
    /// Writes the record to `path` (a new file: callers link or rename it into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| BenchError::Internal(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| BenchError::io(format!("writing lease {}", path.display()), e))
    }
}

/// Who holds a lease, as error messages name it: `PID on HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// None for a lock file of the older PID-only format (always this machine).
    pub host: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(h) => write!(f, "{} on {h}", self.pid),
            None => write!(f, "{}", self.pid),
        }
    }
}

/// A lease file as found on disk.
#[derive(Debug, Clone, PartialEq)]
enum Found {
    Record(LeaseRecord),
    /// The older lock format: just the PID of a process on this machine.
    Pid(u32),
    /// Neither (never written by bench): judged by the file's age.
    Unreadable { age: Duration },
}

/// What a reader concludes about a lease it found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Live,
    /// Why it may be taken over.
    Stale(String),
}

/// The rule: stale when not renewed within the holder's timeout, or at once when the holder ran
/// on this machine and its process is gone (or its PID now names another process).
pub fn judge(r: &LeaseRecord, me: &Machine, now_unix_ms: u64) -> Verdict {
    let age = now_unix_ms.saturating_sub(r.renewed_unix_ms);
    if age > r.timeout_ms {
        return Verdict::Stale(format!("not renewed for {:.1} s, timeout {:.1} s", age as f64 / 1e3, r.timeout_ms as f64 / 1e3));
    }
    if me.same_as(r) && !process_alive(r.pid, r.process_start) {
        return Verdict::Stale(format!("process {} on this machine is gone", r.pid));
    }
    Verdict::Live
}

fn judge_found(found: &Found, me: &Machine) -> (Verdict, Holder) {
    match found {
        Found::Record(r) => (judge(r, me, unix_ms()), r.holder()),
        Found::Pid(pid) => {
            let live = *pid != std::process::id() && process_alive(*pid, None);
            let v = if live { Verdict::Live } else { Verdict::Stale(format!("process {pid} is gone")) };
            (v, Holder { pid: *pid, host: None })
        }
        Found::Unreadable { age } => {
            let v = if *age > DEFAULT_TIMEOUT {
                Verdict::Stale(format!("unreadable and {:.0} s old", age.as_secs_f64()))
            } else {
                Verdict::Live
            };
            (v, Holder { pid: 0, host: Some("unknown".into()) })
        }
    }
}

/// A held lease. Renewed by a background thread until dropped; dropping releases it.
pub struct Lease {
    shared: Arc<Shared>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    path: PathBuf,
    token: String,
    timeout: Duration,
    state: Mutex<HolderState>,
}

struct HolderState {
    record: LeaseRecord,
    /// When the last renewal began (before the clock was read for the record).
    renewed_at: Instant,
    /// Set when the lease was lost: why.
    lost: Option<String>,
}

impl Lease {
    /// Takes the lease at `path` with the process-wide [`config`]: `Ok(Err(holder))` when
    /// another process holds it (and the configuration does not wait).
    pub fn acquire(path: PathBuf) -> Result<std::result::Result<Lease, Holder>> {
        Self::acquire_with(path, &config())
    }

    pub fn acquire_with(path: PathBuf, config: &LeaseConfig) -> Result<std::result::Result<Lease, Holder>> {
        let me = Machine::current();
        let token = new_token(&me);
        let mut announced = false;
        loop {
            crate::interrupt::check()?;
            let start = Instant::now();
            let record = LeaseRecord::current(&token, config.timeout);
            if link_new(&path, &record, &token)? {
                return Ok(Ok(Lease::hold(path, token, record, start, config.timeout)));
            }
            let Some((found, text)) = read_found(&path) else { continue };
            if let Found::Record(r) = &found {
                if r.token == token {
                    // `link` reported EEXIST for our own link (a retransmission over NFS).
                    return Ok(Ok(Lease::hold(path, token, r.clone(), start, config.timeout)));
                }
            }
            match judge_found(&found, &me) {
                (Verdict::Live, holder) => {
                    if !config.wait {
                        return Ok(Err(holder));
                    }
                    if !announced {
                        tracing::warn!("{}: held by {holder}; waiting until it is released or expires", path.display());
                        announced = true;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                (Verdict::Stale(why), holder) => {
                    if take_over(&path, &text, &token, &me)? {
                        tracing::info!("{}: took over the expired lease of {holder} ({why})", path.display());
                    }
                }
            }
        }
    }

    fn hold(path: PathBuf, token: String, record: LeaseRecord, renewed_at: Instant, timeout: Duration) -> Lease {
        let shared = Arc::new(Shared { path, token, timeout, state: Mutex::new(HolderState { record, renewed_at, lost: None }) });
        let (stop, stopped) = mpsc::channel::<()>();
        let s = Arc::clone(&shared);
        let renewer = std::thread::Builder::new()
            .name("lease-renewer".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(s.timeout / 4) {
                    if let Err(why) = s.renew() {
                        tracing::warn!("{}: {why}", s.path.display());
                        break;
                    }
                }
            })
            .ok();
        Lease { shared, stop: Some(stop), renewer }
    }

    /// The fence before every write: Ok while the lease file holds our token and was renewed
    /// within the timeout.
    pub fn check(&self) -> Result<()> {
        let s = &self.shared;
        let lost = {
            let st = s.state.lock().unwrap_or_else(|e| e.into_inner());
            st.lost.clone().or_else(|| s.overdue(&st))
        };
        let lost = lost.or_else(|| s.verify().err());
        match lost {
            None => Ok(()),
            Some(why) => Err(BenchError::Lease(format!("{}: lease lost ({why}); stopped without writing", s.path.display()))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Shared {
    fn overdue(&self, st: &HolderState) -> Option<String> {
        let since = st.renewed_at.elapsed();
        (since > self.timeout).then(|| {
            format!("not renewed for {:.1} s, more than its timeout {:.1} s: another process may have taken it over", since.as_secs_f64(), self.timeout.as_secs_f64())
        })
    }

    /// Ok when the lease file holds our token. A missing file is re-read a few times: a
    /// contender that moved it by mistake puts it back.
    fn verify(&self) -> std::result::Result<(), String> {
        for _ in 0..10 {
            match read_found(&self.path) {
                Some((Found::Record(r), _)) if r.token == self.token => return Ok(()),
                Some((found, _)) => {
                    let holder = match found {
                        Found::Record(r) => r.holder().to_string(),
                        Found::Pid(p) => p.to_string(),
                        Found::Unreadable { .. } => "an unreadable file".into(),
                    };
                    return Err(format!("now held by {holder}"));
                }
                None => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Err("the lease file is gone".into())
    }

    fn renew(&self) -> std::result::Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = match self.overdue(&st) {
            Some(why) => Err(why),
            None => self.verify().and_then(|()| {
                let start = Instant::now();
                let mut record = st.record.clone();
                record.renewed_unix_ms = unix_ms();
                let tmp = sibling(&self.path, &format!("{}.renew", self.token));
                record.write(&tmp).map_err(|e| e.to_string())?;
                std::fs::rename(&tmp, &self.path).map_err(|e| format!("renewing: {e}"))?;
                st.record = record;
                st.renewed_at = start;
                Ok(())
            }),
        };
        if let Err(why) = &outcome {
            st.lost = Some(why.clone());
        }
        outcome
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        if self.shared.verify().is_ok() {
            let _ = std::fs::remove_file(&self.shared.path);
        }
    }
}

/// Links a complete record to `path`: true when we now hold it, false when the name exists.
fn link_new(path: &Path, record: &LeaseRecord, token: &str) -> Result<bool> {
    let fresh = sibling(path, &format!("{token}.new"));
    record.write(&fresh)?;
    let linked = std::fs::hard_link(&fresh, path);
    let _ = std::fs::remove_file(&fresh);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // Storage without hard links (some FUSE and SMB mounts): exclusive create, then write.
        // Readers that catch the file empty judge it by age: fresh, so live.
        Err(_) => match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(mut f) => {
                use std::io::Write;
                let text = serde_json::to_string_pretty(record).map_err(|e| BenchError::Internal(e.to_string()))?;
                f.write_all(text.as_bytes()).map_err(|e| BenchError::io(format!("writing lease {}", path.display()), e))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(BenchError::io(format!("creating lease {}", path.display()), e)),
        },
    }
}

/// How long a breaker may stay without its holder: it is held for a few file operations.
const BREAKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Removes the stale lease at `path` (whose text was `stale`) under its breaker. True when this
/// call removed it; false when another contender is at it or the lease changed.
fn take_over(path: &Path, stale: &str, token: &str, me: &Machine) -> Result<bool> {
    let breaker = sibling(path, "break");
    if !link_new(&breaker, &LeaseRecord::current(token, BREAKER_TIMEOUT), token)? {
        if let Some((found, text)) = read_found(&breaker) {
            if let (Verdict::Stale(_), _) = judge_found(&found, me) {
                remove_if_unchanged(&breaker, &text, token)?;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        return Ok(false);
    }
    let removed = match read_found(path) {
        Some((_, text)) if text == stale => remove_if_unchanged(path, stale, token),
        _ => Ok(false),
    };
    if let Some((Found::Record(r), _)) = read_found(&breaker) {
        if r.token == token {
            let _ = std::fs::remove_file(&breaker);
        }
    }
    removed
}

/// Renames `path` to a name of ours and deletes it if its text is still `text`; otherwise links
/// it back. True when removed.
fn remove_if_unchanged(path: &Path, text: &str, token: &str) -> Result<bool> {
    let grave = sibling(path, &format!("{token}.stale"));
    match std::fs::rename(path, &grave) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(BenchError::io(format!("taking over lease {}", path.display()), e)),
    }
    let same = std::fs::read_to_string(&grave).is_ok_and(|moved| moved == text);
    if !same {
        let _ = std::fs::hard_link(&grave, path);
    }
    let _ = std::fs::remove_file(&grave);
    Ok(same)
}

/// The lease file's content, parsed; None when there is no file.
fn read_found(path: &Path) -> Option<(Found, String)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(_) => String::new(),
    };
    let found = if let Ok(r) = serde_json::from_str::<LeaseRecord>(&text) {
        Found::Record(r)
    } else if let Ok(pid) = text.trim().parse::<u32>() {
        Found::Pid(pid)
    } else {
        let age = std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).unwrap_or_default();
        Found::Unreadable { age }
    };
    Some((found, text))
}

/// `dir/NAME.SUFFIX` for a lease at `dir/NAME`: the unique temporary names of one acquirer.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.{suffix}"))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn new_token(me: &Machine) -> String {
    use sha2::Digest;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let seed = format!("{}|{}|{}|{}|{nanos}|{n}", me.host, me.boot_id, me.pid_ns, std::process::id());
    let digest = sha2::Sha256::digest(seed.as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Start time (clock ticks since boot) of process `pid`, from `/proc/PID/stat`.
fn process_start(pid: u32) -> Option<u64> {
    proc_stat(pid).and_then(|(_, start)| start)
}

/// (state letter, start time) of `/proc/PID/stat`: fields after the parenthesised command name.
fn proc_stat(pid: u32) -> Option<(char, Option<u64>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 is the state, field 22 the start time; `rest` begins at field 3.
    let state = fields.first()?.chars().next()?;
    Some((state, fields.get(19).and_then(|s| s.parse().ok())))
}

/// A process that exists, is not a zombie and (when known) started when the record says.
fn process_alive(pid: u32, start: Option<u64>) -> bool {
    match proc_stat(pid) {
        None => false,
        Some(('Z' | 'X', _)) => false,
        Some((_, now_start)) => start.is_none() || now_start == start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(secs: f64) -> LeaseConfig {
        LeaseConfig { timeout: Duration::from_secs_f64(secs), wait: false }
    }

    /// A lease as another node would have written it, renewed `age_ms` ago.
    fn foreign(age_ms: u64, timeout_ms: u64) -> LeaseRecord {
        let now = unix_ms();
        LeaseRecord {
            host: "node-elsewhere".into(),
            pid: 4242,
            process_start: Some(1),
            boot_id: "another-boot".into(),
            pid_ns: "pid:[1]".into(),
            started_unix_ms: now - age_ms - 1000,
            renewed_unix_ms: now - age_ms,
            timeout_ms,
            token: "foreign".into(),
        }
    }

    #[test]
    fn judge_other_host_by_renewal_age_only() {
        let me = Machine::current();
        let now = unix_ms();
        // PID 4242 is not looked up: it is another machine's.
        assert_eq!(judge(&foreign(0, 60_000), &me, now), Verdict::Live);
        assert_eq!(judge(&foreign(59_000, 60_000), &me, now), Verdict::Live);
        assert!(matches!(judge(&foreign(61_000, 60_000), &me, now), Verdict::Stale(_)));
        // The holder's own timeout decides, not the reader's.
        assert_eq!(judge(&foreign(100_000, 600_000), &me, now), Verdict::Live);
    }

    #[test]
    fn judge_this_machine_by_process() {
        let me = Machine::current();
        let mut r = LeaseRecord::current("t", Duration::from_secs(60));
        assert_eq!(judge(&r, &me, unix_ms()), Verdict::Live);
        // Same PID, other start time: the PID was reused.
        r.process_start = r.process_start.map(|s| s + 1);
        assert!(matches!(judge(&r, &me, unix_ms()), Verdict::Stale(_)));
        // A finished child's PID (reaped): gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut r = LeaseRecord::current("t", Duration::from_secs(60));
        (r.pid, r.process_start) = (pid, None);
        assert!(matches!(judge(&r, &me, unix_ms()), Verdict::Stale(_)), "{pid}");
    }

    #[test]
    fn a_live_foreign_lease_is_kept_and_an_expired_one_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-1-of-2.lock");
        let live = foreign(1_000, 60_000);
        live.write(&path).unwrap();
        let got = Lease::acquire_with(path.clone(), &cfg(10.0)).unwrap();
        assert_eq!(got.err(), Some(Holder { pid: 4242, host: Some("node-elsewhere".into()) }));
        assert_eq!(serde_json::from_str::<LeaseRecord>(&std::fs::read_to_string(&path).unwrap()).unwrap(), live);

        foreign(61_000, 60_000).write(&path).unwrap();
        let lease = Lease::acquire_with(path.clone(), &cfg(10.0)).unwrap().unwrap();
        let now: LeaseRecord = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!((now.pid, now.timeout_ms, &now.host), (std::process::id(), 10_000, &Machine::current().host));
        lease.check().unwrap();
        drop(lease);
        assert!(!path.exists(), "released");
        // Nothing but the lease's own files were ever created next to it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_older_pid_only_lock_of_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.lock");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        std::fs::write(&path, pid.to_string()).unwrap();
        assert!(Lease::acquire_with(path.clone(), &cfg(10.0)).unwrap().is_ok());
        // PID 1 is alive.
        std::fs::write(&path, "1").unwrap();
        assert_eq!(Lease::acquire_with(path, &cfg(10.0)).unwrap().err(), Some(Holder { pid: 1, host: None }));
    }

    #[test]
    fn renewal_keeps_a_lease_live_past_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.lock");
        let lease = Lease::acquire_with(path.clone(), &cfg(2.0)).unwrap().unwrap();
        let read = || serde_json::from_str::<LeaseRecord>(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let first = read();
        // Seen from another node (judged by renewal age alone), it stays live for twice its timeout.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(4) {
            let mut seen = read();
            seen.host = "elsewhere".into();
            assert_eq!(judge(&seen, &Machine::current(), unix_ms()), Verdict::Live, "after {:?}", t0.elapsed());
            std::thread::sleep(Duration::from_millis(200));
        }
        let later = read();
        assert!(later.renewed_unix_ms > first.renewed_unix_ms + first.timeout_ms, "{first:?} → {later:?}");
        assert_eq!((later.token.as_str(), later.started_unix_ms), (first.token.as_str(), first.started_unix_ms));
        lease.check().unwrap();
    }

    #[test]
    fn a_lease_taken_over_is_reported_lost_and_not_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.lock");
        let lease = Lease::acquire_with(path.clone(), &cfg(60.0)).unwrap().unwrap();
        // Another node decided it was stale and replaced it.
        let thief = foreign(0, 60_000);
        thief.write(&path).unwrap();
        let err = lease.check().unwrap_err().to_string();
        assert!(err.contains("lease lost (now held by 4242 on node-elsewhere)"), "{err}");
        drop(lease);
        assert_eq!(serde_json::from_str::<LeaseRecord>(&std::fs::read_to_string(&path).unwrap()).unwrap(), thief);
    }

    #[test]
    fn racing_contenders_for_a_stale_lease_yield_exactly_one_holder() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..30 {
            let path = dir.path().join(format!("race-{round}.lock"));
            foreign(120_000, 60_000).write(&path).unwrap();
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (path, barrier) = (path.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        Lease::acquire_with(path, &cfg(60.0)).unwrap().ok()
                    })
                })
                .collect();
            let won: Vec<Lease> = handles.into_iter().filter_map(|h| h.join().unwrap()).collect();
            assert_eq!(won.len(), 1, "round {round}");
            won[0].check().unwrap();
        }
    }

    #[test]
    fn timeouts_parse_as_seconds() {
        assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_timeout("0.1").is_err() && parse_timeout("x").is_err() && parse_timeout("inf").is_err());
    }
}
