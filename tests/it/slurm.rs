//! Scale-out: `bench submit --slurm` on a real single-node Slurm cluster (see `slurm_cluster`),
//! `bench status`, part leases on shared storage and SIGTERM at a batch boundary.
//!
//! Every Slurm run is compared with the same spec run locally with the same partition and thread
//! count: FD bits equal, since a part's samples and statistics do not depend on where or in how
//! many sittings it ran.
use crate::common::*;
use crate::slurm_cluster::Cluster;
use samplerbench::runner::lease::LeaseRecord;
use samplerbench::hashing::HashCache;
use samplerbench::plan;
use samplerbench::results::{read_results, ResultRow};
use samplerbench::runner::{PartState, Shard};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Three cheap cells (~0.1 s of sampling each).
const LIGHT: &str = "name: light\nmodel:\n  kind: oracle\n  data: {kind: gaussian, shape: [3, 4, 4], mean: [0.1, -0.2, 0.0], std: [0.3, 0.8, 0.5]}\n\
samplers:\n  - {name: ddim, eta: [0.0, 0.5, 1.0], skip: uniform}\nsteps: 20\nsamples: 400\nbatch_size: 25\nseed: 7\ndevice: cpu\n\
metrics:\n  fd_pixel: {}\n  fd_exact: {}\nsave_samples: 0\n";

/// One cell whose halves take seconds (60 batches of 4 samples × 400 steps each, ~4 s on an idle
/// core, checkpoint every 4 batches): caught at its first checkpoint, a half has 56 batches to go,
/// far longer than a signal takes to arrive (at 100 steps an idle machine finished a half between
/// two polls).
const HEAVY: &str = "name: heavy\nmodel:\n  kind: oracle\n  data: {kind: gaussian, shape: [3, 4, 4], mean: [0.1, -0.2, 0.0], std: [0.3, 0.8, 0.5]}\n\
samplers:\n  - {name: ddim, eta: 1.0, skip: uniform}\nsteps: 400\nsamples: 480\nbatch_size: 4\nseed: 11\ndevice: cpu\n\
metrics:\n  fd_pixel: {}\n  fd_exact: {}\nsave_samples: 0\n";

/// Generous: the 2-core machine also runs the rest of the suite.
const JOB_TIMEOUT: Duration = Duration::from_secs(240);

fn write_spec(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("spec.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sorted_rows(out: &Path) -> Vec<ResultRow> {
    let mut rows = read_results(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    rows.sort_by(|a, b| a.cell_hash.cmp(&b.cell_hash));
    rows
}

/// `bench ARGS` with one thread, as the Slurm tasks run it (`--cpus-per-task 1` sets
/// OMP_NUM_THREADS=1): the thread count may change the last bits of a reduction.
fn bench1(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bench_bin()).args(args).env("OMP_NUM_THREADS", "1").output().unwrap()
}

fn bench1_ok(args: &[&str]) {
    let o = bench1(args);
    assert_eq!(o.status.code(), Some(0), "bench {args:?}: {}", stderr(&o));
}

/// The spec run locally with one thread: `shards` parts, then the merging plain run. Cached.
fn reference(body: &'static str, shards: usize) -> Vec<ResultRow> {
    type Rows = HashMap<(&'static str, usize), Vec<ResultRow>>;
    static CACHE: OnceLock<Mutex<Rows>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap().get(&(body, shards)) {
        return r.clone();
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), body);
    let out = dir.path().join("out");
    for k in 1..=shards {
        bench1_ok(&["run", s(&spec), "--out", s(&out), "--quiet", "--shard", &format!("{k}/{shards}")]);
    }
    bench1_ok(&["run", s(&spec), "--out", s(&out), "--quiet"]);
    let rows = sorted_rows(&out);
    cache.lock().unwrap().insert((body, shards), rows.clone());
    rows
}

fn assert_same_rows(got: &[ResultRow], want: &[ResultRow]) {
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(want) {
        assert_eq!(a.cell_hash, b.cell_hash);
        let (x, y) = (a.metric("fd_pixel").unwrap(), b.metric("fd_pixel").unwrap());
        assert_eq!(x.to_bits(), y.to_bits(), "cell {}: fd_pixel {x} vs local {y}", a.cell_hash);
        assert_eq!(a.metric("fd_exact"), b.metric("fd_exact"));
        assert_eq!((a.samples, a.nfe, a.nan_samples), (b.samples, b.nfe, b.nan_samples));
    }
}

fn cell_hashes(spec: &Path) -> Vec<String> {
    let mut plan = plan::load(spec).unwrap();
    // Cell hashes cover the input files' contents; an in-memory cache writes nothing.
    plan.hash_inputs(&mut HashCache::default()).unwrap();
    plan.cells.into_iter().map(|c| c.hash).collect()
}

fn part_state(out: &Path, hash: &str, part: Shard) -> Option<PartState> {
    samplerbench::runner::parts::read_state(&out.join("cells").join(hash).join(format!("{}.json", part.tag())))
}

fn lock_path(out: &Path, hash: &str, part: Shard) -> PathBuf {
    out.join("cells").join(hash).join(format!("{}.lock", part.tag()))
}

/// Polls until part `part` of cell `hash` has checkpointed but is not done.
fn wait_mid_part(out: &Path, hash: &str, part: Shard, cluster: Option<&Cluster>) -> PartState {
    let t0 = Instant::now();
    loop {
        if let Some(st) = part_state(out, hash, part) {
            assert!(!st.done, "{} finished before it could be interrupted: make the part longer", part.tag());
            if st.next > st.first {
                return st;
            }
        }
        if t0.elapsed() > JOB_TIMEOUT {
            panic!("no checkpoint of {}\n{}", part.tag(), cluster.map(|c| c.diagnostics(&out.join("slurm/logs"))).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(serde::Deserialize)]
struct JobsFile {
    tasks: Vec<String>,
    merge_job: Option<String>,
    shards: usize,
}

fn jobs(out: &Path) -> JobsFile {
    serde_json::from_str(&std::fs::read_to_string(out.join("slurm/jobs.json")).unwrap()).unwrap()
}

/// `bench submit ... --slurm`: asserts success and the exact report; returns (array job, merge job).
fn submit(cluster: &Cluster, spec: &Path, out: &Path, shards: usize, extra: &[&str]) -> (String, String) {
    let n = shards.to_string();
    let mut args = vec!["submit", s(spec), "--slurm", "--shards", &n, "--out", s(out), "--cpus-per-task", "1"];
    args.extend(extra);
    let o = cluster.bench(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = jobs(out);
    let array = j.tasks[0].split('_').next().unwrap().to_string();
    let merge = j.merge_job.clone().unwrap();
    let tasks: Vec<String> = (0..shards).map(|i| format!("{array}_{i}")).collect();
    assert_eq!((j.shards, &j.tasks), (shards, &tasks));
    let listed: Vec<String> = (1..=shards).map(|k| k.to_string()).collect();
    assert_eq!(
        stdout(&o),
        format!("array job {array}: shards {} as tasks {}\nmerge job {merge}: --dependency=afterok:{array}\n", listed.join(","), tasks.join(" "))
    );
    (array, merge)
}

fn log(out: &Path, name: &str) -> String {
    std::fs::read_to_string(out.join("slurm/logs").join(name)).unwrap_or_default()
}

fn status_json(cluster: Option<&Cluster>, out: &Path) -> serde_json::Value {
    let args = ["status", s(out), "--json"];
    let o = match cluster {
        Some(c) => c.bench(&args),
        None => bench(&args),
    };
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn an_array_of_four_tasks_and_a_merge_equal_the_local_run() {
    let Some(cluster) = Cluster::start("slurm::an_array_of_four_tasks_and_a_merge_equal_the_local_run", 0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), LIGHT);
    let out = dir.path().join("out");
    let t0 = Instant::now();
    let (array, merge) = submit(&cluster, &spec, &out, 4, &[]);
    let array_script = std::fs::read_to_string(out.join("slurm/array.sbatch")).unwrap();
    assert!(array_script.contains("#SBATCH --array=0-3\n") && array_script.contains("shard=\"$((SLURM_ARRAY_TASK_ID + 1))/4\"\n"));
    assert!(std::fs::read_to_string(out.join("slurm/merge.sbatch")).unwrap().contains("#SBATCH --kill-on-invalid-dep=yes\n"));
    let logs = out.join("slurm/logs");
    cluster.wait_job(&merge, &["COMPLETED"], JOB_TIMEOUT, &logs);
    eprintln!("4 tasks + merge on Slurm: {:.1} s", t0.elapsed().as_secs_f64());
    for k in 0..4 {
        assert_eq!(cluster.job(&format!("{array}_{k}")).unwrap().0, "COMPLETED");
        assert!(log(&out, &format!("task-{array}_{k}.out")).contains(&format!("bench shard {}/4: task {array}_{k} ", k + 1)));
    }
    assert!(log(&out, &format!("merge-{merge}.out")).contains("results.csv"));
    let rows = sorted_rows(&out);
    assert_eq!(rows.len(), 3);
    assert_same_rows(&rows, &reference(LIGHT, 4));
    let st = status_json(Some(&cluster), &out);
    assert_eq!((st["cells_finished"].as_u64(), st["shards"].as_u64()), (Some(3), Some(4)));
    for k in 0..4 {
        let sh = &st["shard_progress"][k];
        assert_eq!((sh["done"].as_u64(), sh["total"].as_u64(), sh["finished"].as_bool()), (Some(300), Some(300), Some(true)));
        assert_eq!((sh["task"]["id"].as_str(), sh["task"]["state"].as_str()), (Some(format!("{array}_{k}").as_str()), Some("COMPLETED")));
    }
    assert_eq!(st["merge_job"]["state"], "COMPLETED");
}

#[test]
fn a_cancelled_task_resumes_with_submit_resume_to_the_identical_result() {
    let Some(cluster) = Cluster::start("slurm::a_cancelled_task_resumes_with_submit_resume_to_the_identical_result", 0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), HEAVY);
    let hash = cell_hashes(&spec).remove(0);
    let out = dir.path().join("out");
    let logs = out.join("slurm/logs");
    let (array, merge) = submit(&cluster, &spec, &out, 2, &[]);
    let second = Shard { index: 2, count: 2 };
    wait_mid_part(&out, &hash, second, Some(&cluster));
    let task = format!("{array}_1");
    assert!(cluster.command("scancel").arg(&task).status().unwrap().success());
    cluster.wait_job(&task, &["CANCELLED"], JOB_TIMEOUT, &logs);
    cluster.wait_job(&format!("{array}_0"), &["COMPLETED"], JOB_TIMEOUT, &logs);
    // Its dependency on the whole array can never be satisfied now.
    let (_, reason) = cluster.wait_job(&merge, &["CANCELLED"], JOB_TIMEOUT, &logs);
    assert_eq!(reason, "DependencyNeverSatisfied");
    // scancel sent SIGTERM: the task checkpointed at a batch boundary and released its lease.
    let stopped = part_state(&out, &hash, second).unwrap();
    assert!(stopped.next > stopped.first && stopped.next < stopped.end && !stopped.done, "{stopped:?}");
    assert!(!lock_path(&out, &hash, second).exists());
    assert!(log(&out, &format!("task-{task}.out")).contains("error: interrupted (SIGTERM); rerun the same command to resume"));

    // bench status: per-shard samples, the tasks' and the merge job's states.
    let st = status_json(Some(&cluster), &out);
    let sh = &st["shard_progress"];
    assert_eq!((sh[0]["done"].as_u64(), sh[0]["total"].as_u64(), sh[0]["finished"].as_bool()), (Some(240), Some(240), Some(true)));
    assert_eq!((sh[1]["done"].as_u64(), sh[1]["finished"].as_bool()), (Some(stopped.next - 240), Some(false)));
    assert_eq!((sh[0]["task"]["state"].as_str(), sh[1]["task"]["state"].as_str()), (Some("COMPLETED"), Some("CANCELLED")));
    assert_eq!((st["merge_job"]["state"].as_str(), st["merge_job"]["reason"].as_str()), (Some("CANCELLED"), Some("DependencyNeverSatisfied")));
    assert_eq!((st["cells_finished"].as_u64(), st["cells"][0]["done"].as_u64()), (Some(0), Some(stopped.next)));
    let text = stdout(&cluster.bench(&["status", s(&out)]));
    assert!(text.contains(&format!("   0  ddim eta=1 S=400  {}/480  240 {}\n", stopped.next, stopped.next - 240)), "{text}");
    assert!(text.contains(&format!("{task} CANCELLED\n")) && text.contains(&format!("{merge} CANCELLED (DependencyNeverSatisfied)\n")), "{text}");
    assert!(text.contains("\nfinished cells 0/1; ETA "), "{text}");

    let o = cluster.bench(&["submit", "--resume", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = jobs(&out);
    let again = j.tasks[1].split('_').next().unwrap().to_string();
    let merge2 = j.merge_job.unwrap();
    // Only the unfinished shard is resubmitted; the merge waits for that task by ID.
    assert_eq!(j.tasks, vec![format!("{array}_0"), format!("{again}_1")]);
    assert_eq!(stdout(&o), format!("array job {again}: shards 2 as tasks {again}_1\nmerge job {merge2}: --dependency=afterok:{again}_1\n"));
    cluster.wait_job(&merge2, &["COMPLETED"], JOB_TIMEOUT, &logs);
    assert!(log(&out, &format!("task-{again}_1.out")).contains(&format!("resuming at sample {} from its checkpoint", stopped.next)));
    assert_same_rows(&sorted_rows(&out), &reference(HEAVY, 2));

    let o = cluster.bench(&["submit", "--resume", s(&out)]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), ""));
    assert!(stderr(&o).contains("all 1 cells are finished; nothing to submit"), "{}", stderr(&o));
}

#[test]
fn a_requeued_task_resumes_from_its_checkpoint() {
    let Some(cluster) = Cluster::start("slurm::a_requeued_task_resumes_from_its_checkpoint", 0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), HEAVY);
    let hash = cell_hashes(&spec).remove(0);
    let out = dir.path().join("out");
    let logs = out.join("slurm/logs");
    let (array, merge) = submit(&cluster, &spec, &out, 2, &[]);
    let first = Shard { index: 1, count: 2 };
    wait_mid_part(&out, &hash, first, Some(&cluster));
    let task = format!("{array}_0");
    assert!(cluster.command("scontrol").args(["requeue", &task]).status().unwrap().success());
    // Requeued: pending until cred_expire (10 s) has passed; the old process is gone by then.
    cluster.wait_job(&task, &["PENDING"], JOB_TIMEOUT, &logs);
    let stopped = part_state(&out, &hash, first).unwrap();
    assert!(stopped.next > stopped.first && !stopped.done, "{stopped:?}");
    assert!(!lock_path(&out, &hash, first).exists());
    // A requeued task is pending again, not failed: the merge's dependency on the array holds.
    cluster.wait_job(&merge, &["COMPLETED"], JOB_TIMEOUT, &logs);
    let text = log(&out, &format!("task-{task}.out"));
    let first_run = text.find(", restart 0,").expect("first run");
    let interrupted = text.find("error: interrupted (SIGTERM); rerun the same command to resume").expect("SIGTERM handled");
    let second_run = text.find(", restart 1,").expect("restarted");
    let resumed = text.find(&format!("resuming at sample {} from its checkpoint", stopped.next)).expect("resumed at the checkpoint");
    assert!(first_run < interrupted && interrupted < second_run && second_run < resumed, "{text}");
    assert_same_rows(&sorted_rows(&out), &reference(HEAVY, 2));
}

#[test]
fn a_live_lease_is_never_taken_over_and_an_expired_one_is() {
    let Some(cluster) = Cluster::start("slurm::a_live_lease_is_never_taken_over_and_an_expired_one_is", 0) else { return };
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), HEAVY);
    let hash = cell_hashes(&spec).remove(0);
    let out = dir.path().join("out");
    let logs = out.join("slurm/logs");
    let first = Shard { index: 1, count: 2 };
    let lock = lock_path(&out, &hash, first);
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    // A lease held by a process on another node, with a 3 s timeout, renewed by this test.
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let record = LeaseRecord {
        host: "node-elsewhere".into(),
        pid: 4242,
        process_start: Some(1),
        boot_id: "another-boot".into(),
        pid_ns: "pid:[1]".into(),
        started_unix_ms: now(),
        renewed_unix_ms: now(),
        timeout_ms: 3000,
        token: "held-elsewhere".into(),
    };
    record.write(&lock).unwrap();
    let renewing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let renewer = {
        let (renewing, lock, mut record) = (renewing.clone(), lock.clone(), record.clone());
        std::thread::spawn(move || {
            while renewing.load(std::sync::atomic::Ordering::SeqCst) {
                record.renewed_unix_ms = now();
                let tmp = lock.with_extension("lock.test-renew");
                record.write(&tmp).unwrap();
                std::fs::rename(&tmp, &lock).unwrap();
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let (array, merge) = submit(&cluster, &spec, &out, 2, &["--lease-timeout", "30"]);
    let task = format!("{array}_0");
    cluster.wait_until("shard 1 to wait for the lease", JOB_TIMEOUT, || {
        log(&out, &format!("task-{task}.out")).contains("held by 4242 on node-elsewhere; waiting until it is released or expires")
    });
    // Live for longer than its 3 s timeout, because renewed: never taken over.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(cluster.job(&task).unwrap().0, "RUNNING");
    let held: LeaseRecord = serde_json::from_str(&std::fs::read_to_string(&lock).unwrap()).unwrap();
    assert_eq!(held.token, "held-elsewhere");
    assert!(part_state(&out, &hash, first).is_none(), "a part was written under another's live lease");
    renewing.store(false, std::sync::atomic::Ordering::SeqCst);
    renewer.join().unwrap();
    // Not renewed any more: expired after 3 s, taken over, finished.
    cluster.wait_job(&merge, &["COMPLETED"], JOB_TIMEOUT, &logs);
    assert!(log(&out, &format!("task-{task}.out")).contains("took over the expired lease of 4242 on node-elsewhere (not renewed for"));
    assert_same_rows(&sorted_rows(&out), &reference(HEAVY, 2));
}

#[test]
fn gpus_per_task_gives_each_task_its_own_cuda_visible_devices() {
    let Some(cluster) = Cluster::start("slurm::gpus_per_task_gives_each_task_its_own_cuda_visible_devices", 2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), HEAVY);
    let out = dir.path().join("out");
    // Two tasks of seconds each on a node with 2 CPUs and 2 (fake) GPUs: they run side by side.
    let (array, merge) = submit(&cluster, &spec, &out, 2, &["--gpus-per-task", "1"]);
    assert!(std::fs::read_to_string(out.join("slurm/array.sbatch")).unwrap().contains("#SBATCH --gpus-per-task=1\n"));
    cluster.wait_job(&merge, &["COMPLETED"], JOB_TIMEOUT, &out.join("slurm/logs"));
    let mut devices: Vec<String> = (0..2)
        .map(|k| {
            let text = log(&out, &format!("task-{array}_{k}.out"));
            text.split("CUDA_VISIBLE_DEVICES=").nth(1).and_then(|r| r.lines().next()).unwrap_or("").to_string()
        })
        .collect();
    devices.sort();
    assert_eq!(devices, ["0", "1"]);
    assert_same_rows(&sorted_rows(&out), &reference(HEAVY, 2));
}

#[test]
fn sigterm_stops_at_a_batch_boundary_and_the_rerun_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), HEAVY);
    let hash = cell_hashes(&spec).remove(0);
    let out = dir.path().join("out");
    let first = Shard { index: 1, count: 2 };
    let run = |shard: Option<&str>| {
        let mut args = vec!["run", s(&spec), "--out", s(&out), "--quiet"];
        if let Some(k) = shard {
            args.extend(["--shard", k]);
        }
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let child = std::process::Command::new(bench_bin())
        .args(run(Some("1/2")))
        .env("OMP_NUM_THREADS", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_mid_part(&out, &hash, first, None);
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim_end().lines().last(), Some("error: interrupted (SIGTERM); rerun the same command to resume"));
    let stopped = part_state(&out, &hash, first).unwrap();
    assert!(stopped.next > stopped.first && !stopped.done && !lock_path(&out, &hash, first).exists(), "{stopped:?}");
    for shard in [Some("1/2"), Some("2/2"), None] {
        bench1_ok(&run(shard).iter().map(String::as_str).collect::<Vec<_>>());
    }
    assert_same_rows(&sorted_rows(&out), &reference(HEAVY, 2));
}

#[test]
fn status_reports_per_shard_progress_of_a_local_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), LIGHT);
    let out = dir.path().join("out");
    let o = bench(&["run", s(&spec), "--out", s(&out), "--shard", "1/2", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let st = status_json(None, &out);
    assert_eq!((st["shards"].as_u64(), st["cells_finished"].as_u64(), st["cells_total"].as_u64()), (Some(2), Some(0), Some(3)));
    let sh = &st["shard_progress"];
    assert_eq!((sh[0]["done"].as_u64(), sh[0]["total"].as_u64(), sh[0]["finished"].as_bool()), (Some(600), Some(600), Some(true)));
    assert_eq!((sh[1]["done"].as_u64(), sh[1]["finished"].as_bool(), sh[1]["task"].is_null()), (Some(0), Some(false), true));
    // Shard 2 has measured nothing: its ETA uses shard 1's speed, so it is known and positive.
    assert!(sh[0]["images_per_second"].as_f64().unwrap() > 0.0 && sh[1]["eta_seconds"].as_f64().unwrap() > 0.0);
    assert!(st["merge_job"].is_null());
    let text = stdout(&bench(&["status", s(&out)]));
    let table = "cell  sampler            samples  per shard\n\
                 \x20  0  ddim eta=0 S=20    200/400  200 0\n\
                 \x20  1  ddim eta=0.5 S=20  200/400  200 0\n\
                 \x20  2  ddim eta=1 S=20    200/400  200 0\n";
    assert!(text.contains(table), "{text}");
    let o = bench(&["run", s(&spec), "--out", s(&out), "--shard", "2/2", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&bench(&["status", s(&out)]));
    assert!(text.contains("   2  ddim eta=1 S=20    400/400  finished\n") && text.ends_with("finished cells 3/3; all done\n"), "{text}");
}

/// With `repeats: K` a cell's parts live per repeat: status counts every repeat's samples.
#[test]
fn status_counts_every_repeat_of_a_sharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), &LIGHT.replace("seed: 7\n", "seed: 7\nrepeats: 2\n"));
    let out = dir.path().join("out");
    let o = bench(&["run", s(&spec), "--out", s(&out), "--shard", "1/2", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let st = status_json(None, &out);
    assert_eq!((st["repeats"].as_u64(), st["cells_finished"].as_u64()), (Some(2), Some(0)));
    let sh = &st["shard_progress"];
    assert_eq!((sh[0]["done"].as_u64(), sh[0]["total"].as_u64(), sh[0]["finished"].as_bool()), (Some(1200), Some(1200), Some(true)));
    assert_eq!((sh[1]["done"].as_u64(), sh[1]["total"].as_u64(), sh[1]["finished"].as_bool()), (Some(0), Some(1200), Some(false)));
    let text = stdout(&bench(&["status", s(&out)]));
    assert!(text.contains("experiment light, 3 cells × 400 samples × 2 repeats in 2 shards\n"), "{text}");
    assert!(text.contains("   1  ddim eta=0.5 S=20  400/800  400 0\n"), "{text}");
    let o = bench(&["run", s(&spec), "--out", s(&out), "--shard", "2/2", "--quiet"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&bench(&["status", s(&out)]));
    assert!(text.contains("   1  ddim eta=0.5 S=20  800/800  finished\n") && text.ends_with("finished cells 3/3; all done\n"), "{text}");
}

#[test]
fn submit_user_errors_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), LIGHT);
    let out = dir.path().join("out");
    let no_slurm = std::process::Command::new(bench_bin())
        .args(["submit", s(&spec), "--slurm", "--shards", "2", "--out", s(&out)])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(no_slurm.status.code(), Some(2));
    assert_eq!(
        stderr(&no_slurm),
        "error: sbatch: not found on PATH: the Slurm client tools are missing (Debian/Ubuntu: apt-get install slurm-client; on a cluster: module load slurm)\n"
    );
    assert!(!out.exists(), "nothing is written before sbatch is found");
    let o = bench(&["submit", s(&spec), "--shards", "2"]);
    assert_eq!((o.status.code(), stderr(&o).as_str()), (Some(2), "error: bench submit: choose a launcher: --slurm (the one there is)\n"));
    let o = bench(&["submit", "--resume", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("slurm/jobs.json: not found: --resume continues a submission"), "{}", stderr(&o));
    let o = bench(&["submit", s(&spec), "--slurm", "--shards", "2", "--out", s(&out), "--time", "4h"]);
    assert_eq!((o.status.code(), stderr(&o).as_str()), (Some(2), "error: --time \"4h\": expected HH:MM:SS (or D-HH:MM:SS, MM)\n"));

    let o = bench(&["submit", s(&spec), "--slurm", "--shards", "2", "--out", s(&out), "--dry-run", "--partition", "gpu"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with(&format!("# {}/slurm/array.sbatch\n#!/bin/bash\n", out.display())), "{text}");
    assert!(text.contains("#SBATCH --array=0-1\n") && text.contains("#SBATCH --partition=gpu\n") && text.contains("merge.sbatch\n#!/bin/bash\n"));
    assert!(stderr(&o).contains("would run: sbatch --parsable --dependency=afterok:<array job id> --kill-on-invalid-dep=yes"));
    assert!(!out.exists(), "a dry run writes nothing");
}
