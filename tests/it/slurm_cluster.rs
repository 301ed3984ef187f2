//! A real single-node Slurm cluster on localhost for the Slurm tests (Debian 12's slurm-wlm
//! 22.05 and munge): installed when missing (as root, `apt-get install --no-install-recommends`),
//! started under a short private prefix, stopped by the Drop of [`Cluster`] (jobs cancelled first:
//! stopping slurmd does not kill job steps; daemons by their recorded PIDs, never by name).
//!
//! Tests using it are serialised (one cluster at a time; the machine has 2 cores) and are skipped,
//! with a `SKIPPED` line on stderr, only when not root or when the packages cannot be installed.
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const PACKAGES: [&str; 4] = ["slurmctld", "slurmd", "slurm-client", "munge"];
const PROGRAMS: [&str; 6] = ["slurmctld", "slurmd", "sbatch", "munged", "mungekey", "runuser"];

static SERIAL: Mutex<()> = Mutex::new(());
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

pub struct Cluster {
    pub prefix: PathBuf,
    pub conf: PathBuf,
    /// slurmd, slurmctld, munged: stopped in this order.
    daemons: Vec<Daemon>,
    test: String,
    started: Instant,
    _serial: MutexGuard<'static, ()>,
}

struct Daemon {
    name: &'static str,
    child: Child,
    /// The daemon's own PID when `child` is a wrapper (runuser forks munged).
    pidfile: Option<PathBuf>,
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    // The effective UID, without libc: /proc/self/status "Uid: real effective ...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0")))
        .unwrap_or(false)
}

fn install() -> Result<(), String> {
    if PROGRAMS.iter().all(|p| have(p)) {
        return Ok(());
    }
    let t0 = Instant::now();
    let run = |args: &[&str]| -> Result<(), String> {
        let o = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(|e| format!("apt-get: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("apt-get {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
        }
    };
    run(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(PACKAGES);
    run(&args)?;
    eprintln!("slurm tests: installed {} in {:.1} s", PACKAGES.join(" "), t0.elapsed().as_secs_f64());
    match PROGRAMS.iter().find(|p| !have(p)) {
        Some(p) => Err(format!("{p} still missing after installing {}", PACKAGES.join(" "))),
        None => Ok(()),
    }
}

/// Stops the daemons of clusters whose test process died without its Drop running (killed
/// test run): by their recorded PIDs, each checked to still be that daemon.
fn reap_stale_clusters() {
    let Ok(dir) = std::fs::read_dir("/tmp") else { return };
    for entry in dir.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name.strip_prefix("sb-slurm-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        for (pidfile, comm) in [("run/slurmd.pid", "slurmd"), ("run/slurmctld.pid", "slurmctld"), ("munge/munged.pid", "munged")] {
            let pid = std::fs::read_to_string(entry.path().join(pidfile)).ok().and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(pid) = pid {
                if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm) {
                    eprintln!("slurm tests: stopping {comm} (pid {pid}) left by dead test process {owner}");
                    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// A free TCP port on localhost (released at once; the daemons bind it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

impl Cluster {
    /// Starts a cluster for `test`, with `gpus` fake GPUs (character devices, major 195) on the
    /// node. None (after a loud SKIPPED line) when not root or Slurm cannot be installed.
    pub fn start(test: &str, gpus: usize) -> Option<Cluster> {
        if !is_root() {
            eprintln!("SKIPPED {test}: the Slurm tests start slurmctld, slurmd and munged and need root");
            return None;
        }
        if let Err(e) = INSTALLED.get_or_init(install) {
            eprintln!("SKIPPED {test}: the Slurm packages ({}) cannot be installed: {e}", PACKAGES.join(" "));
            return None;
        }
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        reap_stale_clusters();
        let t0 = Instant::now();
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Short: UNIX socket paths are limited to 108 bytes.
        let prefix = PathBuf::from(format!("/tmp/sb-slurm-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&prefix);
        for d in ["munge", "state", "spool", "log", "run", "dev"] {
            std::fs::create_dir_all(prefix.join(d)).unwrap();
        }
        let mut cluster = Cluster { conf: prefix.join("slurm.conf"), prefix: prefix.clone(), daemons: Vec::new(), test: test.into(), started: t0, _serial: serial };
        let p = |s: &str| prefix.join(s).display().to_string();

        // munge: its own daemon, socket directory owned by munge with mode 0755, key mode 0600.
        ok(Command::new("chown").args(["munge:munge", &p("munge")]));
        ok(Command::new("chmod").args(["0755", &p("munge")]));
        ok(Command::new("mungekey").args(["--create", &format!("--keyfile={}", p("munge/munge.key"))]));
        ok(Command::new("chown").args(["munge:munge", &p("munge/munge.key")]));
        ok(Command::new("chmod").args(["0600", &p("munge/munge.key")]));
        let socket = p("munge/socket");
        cluster.spawn(
            "munged",
            Command::new("runuser").args(["-u", "munge", "--", "munged", "--foreground"]).args([
                format!("--socket={socket}"),
                format!("--key-file={}", p("munge/munge.key")),
                format!("--pid-file={}", p("munge/munged.pid")),
                format!("--log-file={}", p("munge/munged.log")),
                format!("--seed-file={}", p("munge/munged.seed")),
            ]),
            Some(prefix.join("munge/munged.pid")),
        );
        cluster.wait_until("munged's socket", Duration::from_secs(20), || Path::new(&socket).exists());

        let mut gres = String::new();
        if gpus > 0 {
            for i in 0..gpus {
                ok(Command::new("mknod").args([&p(&format!("dev/nvidia{i}")), "c", "195", &i.to_string()]));
            }
            // File= is required: a Count= without File= drains the node in 22.05.
            write(&prefix.join("gres.conf"), &format!("Name=gpu File={}/dev/nvidia[0-{}]\n", p(""), gpus - 1));
            gres = format!(" Gres=gpu:{gpus}");
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let probed = ok(Command::new("slurmd").arg("-C"));
        let memory: u64 = probed.split_whitespace().find_map(|w| w.strip_prefix("RealMemory=")?.parse().ok()).unwrap_or(2048);
        write(
            &cluster.conf,
            &format!(
                "ClusterName=sbtest\n\
                 SlurmctldHost=localhost(127.0.0.1)\n\
                 SlurmctldPort={ctld_port}\n\
                 SlurmdPort={d_port}\n\
                 SlurmUser=root\n\
                 SlurmdUser=root\n\
                 AuthType=auth/munge\n\
                 CredType=cred/munge\n\
                 AuthInfo=socket={socket},cred_expire=10\n\
                 ProctrackType=proctrack/linuxproc\n\
                 TaskPlugin=task/none\n\
                 SelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_CPU\n\
                 SchedulerParameters=batch_sched_delay=0,sched_interval=2\n\
                 ReturnToService=2\n\
                 MailProg=/bin/true\n\
                 StateSaveLocation={state}\n\
                 SlurmdSpoolDir={spool}\n\
                 SlurmctldLogFile={log}/slurmctld.log\n\
                 SlurmdLogFile={log}/slurmd.log\n\
                 SlurmctldPidFile={run}/slurmctld.pid\n\
                 SlurmdPidFile={run}/slurmd.pid\n\
                 {gres_types}\
                 NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem}{gres} State=UNKNOWN\n\
                 PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
                ctld_port = free_port(),
                d_port = free_port(),
                state = p("state"),
                spool = p("spool"),
                log = p("log"),
                run = p("run"),
                gres_types = if gpus > 0 { "GresTypes=gpu\n" } else { "" },
                mem = memory / 2,
            ),
        );
        let conf = cluster.conf.display().to_string();
        cluster.spawn("slurmctld", Command::new("slurmctld").args(["-D", "-i", "-f", &conf]), None);
        cluster.spawn("slurmd", Command::new("slurmd").args(["-D", "-N", "localhost", "-f", &conf]), None);
        cluster.wait_until("the node to be idle", Duration::from_secs(30), || {
            cluster.command("sinfo").args(["--noheader", "--format=%T"]).output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        eprintln!("slurm cluster for {test} up in {:.1} s under {}", t0.elapsed().as_secs_f64(), prefix.display());
        Some(cluster)
    }

    fn spawn(&mut self, name: &'static str, cmd: &mut Command, pidfile: Option<PathBuf>) {
        let out = std::fs::File::create(self.prefix.join(format!("log/{name}.out"))).unwrap();
        let err = out.try_clone().unwrap();
        // Its own process group: no terminal signals from the test run.
        let child = cmd
            .env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.daemons.insert(0, Daemon { name, child, pidfile });
    }

    /// A Slurm client command for this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    /// `bench ARGS` as a client of this cluster.
    pub fn bench(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.command(crate::common::bench_bin().to_str().unwrap());
        c.args(args).output().unwrap()
    }

    /// (JobState, Reason) from `scontrol show job`.
    pub fn job(&self, id: &str) -> Option<(String, String)> {
        let o = self.command("scontrol").args(["--oneliner", "show", "job", id]).output().ok()?;
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        let field = |k: &str| s.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
        Some((field("JobState=")?, field("Reason=").unwrap_or_default()))
    }

    /// Waits until job `id` is in one of `states`; returns (state, reason). Panics after
    /// `timeout`, or when it ends in another state, with the cluster's and the jobs' logs.
    pub fn wait_job(&self, id: &str, states: &[&str], timeout: Duration, logs: &Path) -> (String, String) {
        let t0 = Instant::now();
        loop {
            if let Some((state, reason)) = self.job(id) {
                if states.contains(&state.as_str()) {
                    return (state, reason);
                }
                let ended = ["COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL"];
                if ended.contains(&state.as_str()) {
                    panic!("job {id} ended {state} ({reason}), expected {states:?}\n{}", self.diagnostics(logs));
                }
            }
            if t0.elapsed() > timeout {
                panic!("job {id} not {states:?} after {timeout:?}: {:?}\n{}", self.job(id), self.diagnostics(logs));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !cond() {
            if t0.elapsed() > timeout {
                panic!("waited {timeout:?} for {what}\n{}", self.diagnostics(Path::new("/nonexistent")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// squeue, the daemons' log tails and every file in `logs`.
    pub fn diagnostics(&self, logs: &Path) -> String {
        let mut s = String::new();
        if let Ok(o) = self.command("squeue").args(["--array", "--states=all", "--format=%i %T %r"]).output() {
            s += &format!("squeue:\n{}\n", String::from_utf8_lossy(&o.stdout));
        }
        let mut files: Vec<PathBuf> = ["log/slurmctld.log", "log/slurmd.log", "log/slurmctld.out", "log/slurmd.out", "munge/munged.log"]
            .iter()
            .map(|f| self.prefix.join(f))
            .collect();
        if let Ok(d) = std::fs::read_dir(logs) {
            files.extend(d.filter_map(|e| e.ok().map(|e| e.path())));
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            s += &format!("--- {}\n{}\n", f.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let stopping = Instant::now();
        // Cancel every job first: stopping slurmd leaves running job steps alive.
        if let Ok(o) = self.command("squeue").args(["--noheader", "--format=%A"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect();
            if !ids.is_empty() {
                let _ = self.command("scancel").args(&ids).status();
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(20) {
                    let left = self.command("squeue").arg("--noheader").output().map(|o| o.stdout.is_empty()).unwrap_or(true);
                    if left {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        for d in &mut self.daemons {
            let pid = d
                .pidfile
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|s| s.trim().parse::<u32>().ok())
                .unwrap_or(d.child.id());
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) && matches!(d.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(d.child.try_wait(), Ok(None)) {
                eprintln!("slurm test cluster: {} (pid {pid}) ignored SIGTERM; killing", d.name);
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                let _ = d.child.kill();
                let _ = d.child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.prefix);
        eprintln!(
            "slurm cluster for {}: {:.1} s from start to stopped (stopping {:.1} s)",
            self.test,
            self.started.elapsed().as_secs_f64(),
            stopping.elapsed().as_secs_f64()
        );
    }
}
