//! Test support: a client for the API server of `scripts/kube.sh`, the operator as a child
//! process, and a kubelet stand-in that runs each Job's container command as a local process.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use chrono::{SecondsFormat, Utc};
use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt, ResourceExt};
use serde_json::json;
use streamflow_operator::api::backfill::Backfill;
use streamflow_operator::api::pipeline::Pipeline;
use streamflow_operator::api::pipelinerun::PipelineRun;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub const TIMEOUT: Duration = Duration::from_secs(180);

pub fn repo_root() -> PathBuf {
    // Read when the test runs (cargo sets it), not when it was built: clones share one target
    // directory, and cargo reuses a test binary built in another clone, whose path it has.
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest_dir)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn script_output(script: &str, arg: &str) -> Result<String> {
    let out = std::process::Command::new(repo_root().join(script))
        .arg(arg)
        .output()
        .with_context(|| format!("cannot run {script} {arg}"))?;
    if !out.status.success() {
        bail!(
            "{script} {arg} failed (did you run `{script} start`?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `export NAME=value` lines printed by `scripts/*.sh env`.
pub fn script_env(script: &str) -> Result<BTreeMap<String, String>> {
    script_exports(script, "env")
}

/// `export NAME=value` lines printed by `script command` (`scripts/kafka.sh security`).
pub fn script_exports(script: &str, command: &str) -> Result<BTreeMap<String, String>> {
    Ok(script_output(script, command)?
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches(['"', '\'']).to_owned()))
        .collect())
}

pub fn kubeconfig_path() -> Result<String> {
    script_env("scripts/kube.sh")?
        .remove("KUBECONFIG")
        .ok_or_else(|| anyhow!("scripts/kube.sh env printed no KUBECONFIG"))
}

pub async fn client() -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig_path()?)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

pub fn streamflow_bin() -> PathBuf {
    if let Ok(p) = std::env::var("STREAMFLOW_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    target.join("debug/streamflow")
}

/// The `streamflow` binary, which must have been built (`cargo build -p streamflow`).
pub fn require_streamflow_bin() -> Result<PathBuf> {
    let bin = streamflow_bin();
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build -p streamflow` (same CARGO_TARGET_DIR) or set STREAMFLOW_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Runs the real kubectl of `scripts/kube.sh` against the test API server; its stdout.
pub async fn kubectl(args: Vec<String>) -> Result<String> {
    let out = Command::new(repo_root().join("scripts/kube.sh"))
        .arg("kubectl")
        .args(&args)
        .output()
        .await?;
    if !out.status.success() {
        bail!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Waits until `check` returns `Some`, polling; fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Installs (server-side applies) the operator's CRDs (PipelineRun, Backfill, Pipeline) and
/// waits until they are established.
pub async fn install_crd(client: &Client) -> Result<()> {
    for crd in [PipelineRun::crd(), Backfill::crd(), Pipeline::crd()] {
        install_one_crd(client, crd).await?;
    }
    Ok(())
}

async fn install_one_crd(client: &Client, crd: CustomResourceDefinition) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    api.patch(
        &name,
        &PatchParams::apply("streamflow-tests").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    wait_for("the CRD to be established", TIMEOUT, || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let crd = api.get(&name).await?;
            let ok = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(ok.then_some(()))
        }
    })
    .await
}

/// A fresh namespace (namespaces are never deleted: without a controller-manager they stay
/// Terminating forever).
pub async fn namespace(client: &Client, prefix: &str) -> Result<String> {
    let name = format!("{prefix}-{}", &uuid_like());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(name)
}

fn uuid_like() -> String {
    let n = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    format!("{:x}", n ^ (std::process::id() as u64).rotate_left(40))
        .chars()
        .rev()
        .take(8)
        .collect()
}

/// The leader election timings of the test operators (`--leader-election-*`): short, so a
/// test that kills a leader waits seconds, not the default 15 s, for the next one.
pub const LEASE_DURATION: Duration = Duration::from_secs(5);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(3);
pub const RETRY_PERIOD: Duration = Duration::from_secs(1);
/// The Lease of the test operators, in the namespace each watches.
pub const LEASE_NAME: &str = "streamflow-operator";

/// The operator binary, watching one namespace, killed when dropped. It elects itself leader
/// on a Lease in that namespace (so tests running side by side never share one).
pub struct Operator {
    pub child: Child,
    pub http: String,
}

impl Operator {
    pub async fn start(ns: &str) -> Result<Operator> {
        Self::start_named(ns, "operator").await
    }

    /// An operator whose leader identity starts with `name` (its HOSTNAME, as a pod's name).
    pub async fn start_named(ns: &str, name: &str) -> Result<Operator> {
        Self::start_with_kubeconfig(ns, name, &kubeconfig_path()?).await
    }

    /// An operator reaching the API server as `kubeconfig` says (through a [`Blackhole`], say).
    pub async fn start_with_kubeconfig(ns: &str, name: &str, kubeconfig: &str) -> Result<Operator> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let http = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_streamflow-operator"))
            .args(["--namespace", ns, "--http-addr", &http])
            .args(["--leader-election-namespace", ns])
            .arg(format!(
                "--leader-election-lease-duration={}s",
                LEASE_DURATION.as_secs()
            ))
            .arg(format!(
                "--leader-election-renew-deadline={}s",
                RENEW_DEADLINE.as_secs()
            ))
            .arg(format!(
                "--leader-election-retry-period={}s",
                RETRY_PERIOD.as_secs()
            ))
            .env("KUBECONFIG", kubeconfig)
            .env("HOSTNAME", name)
            .env("RUST_LOG", "info,kube=warn")
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the operator")?;
        let op = Operator { child, http };
        wait_for("the operator's /readyz", TIMEOUT, || async {
            Ok(op
                .get("/readyz")
                .await
                .ok()
                .filter(|(code, _)| *code == 200))
        })
        .await?;
        Ok(op)
    }

    /// A plain HTTP GET: (status code, body).
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut conn = tokio::net::TcpStream::connect(&self.http).await?;
        conn.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = String::new();
        conn.read_to_string(&mut out).await?;
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("bad HTTP response {out:?}"))?;
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// The value of a metric sample (first line starting with `series`).
    pub async fn metric(&self, series: &str) -> Result<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no metric {series} in:\n{body}"))
    }

    /// The operator's peak resident set (VmHWM of /proc/PID/status), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let pid = self.child.id().context("the operator has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
    }

    /// Every sample of a metric family: (labels, value).
    pub async fn samples(&self, family: &str) -> Result<Vec<(String, f64)>> {
        let (_, body) = self.get("/metrics").await?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series[family.len()..].to_owned(), value.parse().ok()?))
            })
            .collect())
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM, as Kubernetes stopping the pod would; waits for the exit and returns its
    /// status.
    pub async fn terminate(mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().context("the operator has exited")?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        Ok(tokio::time::timeout(TIMEOUT, self.child.wait()).await??)
    }

    /// Whether this operator leads (its `streamflow_operator_leader` gauge).
    pub async fn leads(&self) -> Result<bool> {
        Ok(self.metric("streamflow_operator_leader").await? == 1.0)
    }
}

/// A TCP proxy in front of the test API server that can turn into a black hole: from
/// [`Blackhole::cut`] on it forwards nothing more, yet keeps every connection open and accepts
/// new ones, as a network partition that drops packets looks to a client. Stopped when dropped.
pub struct Blackhole {
    /// A kubeconfig naming the proxy as the server (the API server's certificate names
    /// 127.0.0.1, which the proxy listens on).
    pub kubeconfig: tempfile::NamedTempFile,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Blackhole {
    pub async fn start() -> Result<Blackhole> {
        let server = script_output("scripts/kube.sh", "server")?
            .trim()
            .to_owned();
        let upstream = server
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("the API server {server} is not https"))?
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy = format!("https://{}", listener.local_addr()?);
        let config = std::fs::read_to_string(kubeconfig_path()?)?;
        ensure!(
            config.contains(&server),
            "the kubeconfig names no server {server}"
        );
        let kubeconfig = tempfile::NamedTempFile::new()?;
        std::fs::write(kubeconfig.path(), config.replace(&server, &proxy))?;
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut client, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    held.push(client);
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = async { let _ = cut_rx.wait_for(|cut| *cut).await; } => {
                            // Silence, both ways, with both sockets open until the end.
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
            drop(held);
        });
        Ok(Blackhole {
            kubeconfig,
            cut,
            task,
        })
    }

    pub fn kubeconfig_path(&self) -> Result<String> {
        self.kubeconfig
            .path()
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("a temporary path that is not UTF-8"))
    }

    /// From now on nothing passes.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }
}

/// What the stand-in did with one Job.
#[derive(Debug, Clone)]
pub struct Ran {
    pub job: String,
    pub exit_code: i32,
    pub message: String,
}

/// A kubelet stand-in for one namespace: runs every Job's container command as a local
/// process (the `streamflow` binary, same args and env, Secrets and ConfigMap volumes
/// resolved), then writes a Pod with the container's terminated state (exit code and
/// termination message) and the Job's status, as the kubelet and the Job controller would.
pub struct Kubelet {
    pub ran: Arc<Mutex<Vec<Ran>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    pub fn start(client: Client, ns: &str) -> Kubelet {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let ns = ns.to_owned();
        let ran2 = ran.clone();
        let task = tokio::spawn(async move {
            let mut jobs = new_jobs(client.clone(), &ns);
            while let Some(job) = jobs.next().await {
                let client = client.clone();
                let ns = ns.clone();
                let ran = ran2.clone();
                tokio::spawn(async move {
                    let name = job.name_any();
                    match run_job(&client, &ns, job).await {
                        Ok(r) => ran.lock().map(|mut v| v.push(r)).unwrap_or(()),
                        Err(e) => eprintln!("kubelet stand-in: Job {name}: {e:#}"),
                    }
                });
            }
        });
        Kubelet { ran, task }
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

async fn run_job(client: &Client, ns: &str, job: Job) -> Result<Ran> {
    let name = job.name_any();
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let spec = job
        .spec
        .clone()
        .ok_or_else(|| anyhow!("Job {name} has no spec"))?;
    let template = spec.template.clone();
    let pod_spec = template
        .spec
        .clone()
        .ok_or_else(|| anyhow!("no pod spec"))?;
    let container = pod_spec
        .containers
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no container"))?;
    let started = now();

    // The Pod, labelled like the Job controller labels it.
    let mut labels = template.metadata.and_then(|m| m.labels).unwrap_or_default();
    labels.insert("job-name".into(), name.clone());
    labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
    let pod_name = format!("{name}-standin");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": pod_name, "labels": labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                "uid": job.uid().unwrap_or_default(), "controller": true}]},
        "spec": pod_spec,
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    jobs.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"startTime": started, "active": 1}})),
    )
    .await?;

    // Resolve the container: env, envFrom Secrets, ConfigMap volumes, the termination log.
    let dir = tempfile::tempdir()?;
    let term_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let term_file = dir.path().join("termination-log");
    let mut replacements: Vec<(String, String)> =
        vec![(term_path.clone(), term_file.display().to_string())];
    for mount in container.volume_mounts.clone().unwrap_or_default() {
        let Some(vol) = pod_spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
        else {
            continue;
        };
        if let Some(cm) = &vol.config_map {
            let data = Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get(&cm.name)
                .await?
                .data
                .unwrap_or_default();
            let local = dir.path().join(&mount.name);
            std::fs::create_dir_all(&local)?;
            for (k, v) in data {
                std::fs::write(local.join(k), v)?;
            }
            replacements.push((mount.mount_path.clone(), local.display().to_string()));
        }
        if let Some(source) = &vol.secret {
            let local = dir.path().join(&mount.name);
            std::fs::create_dir_all(&local)?;
            write_secret_volume(client, ns, source, &local).await?;
            replacements.push((mount.mount_path.clone(), local.display().to_string()));
        }
    }
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            replacements
                .iter()
                .find(|(from, _)| a == *from || a.starts_with(&format!("{from}/")))
                .map(|(from, to)| format!("{to}{}", &a[from.len()..]))
                .unwrap_or(a)
        })
        .collect();
    let command = container.command.clone().unwrap_or_default();
    if command.first().map(String::as_str) != Some("streamflow") {
        bail!("stand-in runs only the streamflow command, not {command:?}");
    }
    let mut cmd = Command::new(streamflow_bin());
    cmd.args(&command[1..])
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info,rdkafka=warn")
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for from in container.env_from.clone().unwrap_or_default() {
        if let Some(s) = from.secret_ref {
            let secret = Api::<Secret>::namespaced(client.clone(), ns)
                .get(&s.name)
                .await?;
            for (k, v) in secret.data.unwrap_or_default() {
                cmd.env(k, String::from_utf8(v.0)?);
            }
            for (k, v) in secret.string_data.unwrap_or_default() {
                cmd.env(k, v);
            }
        }
    }
    for e in container.env.clone().unwrap_or_default() {
        cmd.env(e.name, e.value.unwrap_or_default());
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", streamflow_bin().display()))?;
    let deadline = spec
        .active_deadline_seconds
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(Duration::from_secs(3600));
    let (exit_code, stderr, deadline_exceeded) =
        match tokio::time::timeout(deadline, child.wait_with_output()).await {
            Ok(out) => {
                let out = out?;
                (
                    out.status.code().unwrap_or(137),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                    false,
                )
            }
            Err(_) => (137, String::new(), true),
        };
    // terminationMessagePolicy FallbackToLogsOnError: the log tail when the file is empty.
    let mut message = std::fs::read_to_string(&term_file).unwrap_or_default();
    if message.trim().is_empty() && exit_code != 0 {
        let lines: Vec<&str> = stderr.lines().collect();
        message = lines[lines.len().saturating_sub(20)..].join("\n");
    }
    if message.len() > 4096 {
        let mut cut = 4096;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let finished = now();
    let ok = exit_code == 0;
    pods.patch_status(
        &pod_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": if ok { "Succeeded" } else { "Failed" },
            "containerStatuses": [{
                "name": container.name, "image": container.image.unwrap_or_default(), "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code,
                    "reason": if ok { "Completed" } else { "Error" },
                    "message": message, "startedAt": started, "finishedAt": finished}}}]}})),
    )
    .await?;
    let cond = |t: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": "True", "reason": reason, "message": msg,
            "lastProbeTime": finished, "lastTransitionTime": finished})
    };
    let status = if ok {
        json!({"startTime": started, "completionTime": finished, "active": 0, "succeeded": 1, "ready": 0,
            "conditions": [cond("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
                           cond("Complete", "CompletionsReached", "Reached expected number of succeeded pods")]})
    } else if deadline_exceeded {
        json!({"startTime": started, "active": 0, "failed": 1, "ready": 0,
            "conditions": [cond("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline"),
                           cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")]})
    } else if let Some(index) = fail_job_rule(&spec, &container.name, exit_code) {
        let msg = format!(
            "Container {} for pod {ns}/{pod_name} failed with exit code {exit_code} matching FailJob rule at index {index}",
            container.name
        );
        json!({"startTime": started, "active": 0, "failed": 1, "ready": 0,
            "conditions": [cond("FailureTarget", "PodFailurePolicy", &msg),
                           cond("Failed", "PodFailurePolicy", &msg)]})
    } else {
        json!({"startTime": started, "active": 0, "failed": 1, "ready": 0,
            "conditions": [cond("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
                           cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")]})
    };
    jobs.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .with_context(|| format!("cannot write the status of Job {name}"))?;
    Ok(Ran {
        job: name,
        exit_code,
        message,
    })
}

/// A Secret volume's files, as the kubelet writes them: the listed items' keys at their
/// paths, or every key; a missing Secret or key is an error (the kubelet would not start the
/// Pod).
async fn write_secret_volume(
    client: &Client,
    ns: &str,
    source: &k8s_openapi::api::core::v1::SecretVolumeSource,
    dir: &Path,
) -> Result<()> {
    let name = source.secret_name.clone().unwrap_or_default();
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&name)
        .await
        .with_context(|| format!("Secret {name} of a volume"))?;
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in secret.string_data.unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    match &source.items {
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .with_context(|| format!("Secret {name} has no key {}", item.key))?;
                std::fs::write(dir.join(&item.path), value)?;
            }
        }
        None => {
            for (key, value) in &data {
                std::fs::write(dir.join(key), value)?;
            }
        }
    }
    Ok(())
}

/// The Job controller's `podFailurePolicy` for a Pod whose container exited with `exit_code`:
/// the index of the first rule that matches, if it is a FailJob rule. Only `onExitCodes` rules
/// can match here (the stand-in's Pods are never disrupted, so no `onPodConditions` rule does);
/// a Count rule, or none, leaves it to `backoffLimit` (0 for the operator's Jobs).
fn fail_job_rule(spec: &JobSpec, container: &str, exit_code: i32) -> Option<usize> {
    let policy = spec.pod_failure_policy.as_ref()?;
    let (index, rule) = policy.rules.iter().enumerate().find(|(_, rule)| {
        rule.on_exit_codes.as_ref().is_some_and(|on| {
            let listed = on.values.contains(&exit_code);
            on.container_name.as_deref().is_none_or(|c| c == container)
                && match on.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                }
        })
    })?;
    (rule.action == "FailJob").then_some(index)
}

/// Creates a PipelineRun from JSON.
pub async fn create_run(client: &Client, ns: &str, body: serde_json::Value) -> Result<PipelineRun> {
    let run: PipelineRun = serde_json::from_value(body)?;
    Ok(Api::<PipelineRun>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &run)
        .await?)
}

/// Creates `body` (a raw object, so that values the Rust types cannot hold reach the server),
/// which the API server must refuse: its message. Fails if the object was accepted.
pub async fn refusal(
    api: &Api<kube::api::DynamicObject>,
    body: serde_json::Value,
) -> Result<String> {
    let what = body.to_string();
    let obj: kube::api::DynamicObject = serde_json::from_value(body)?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => bail!("accepted: {what}"),
        Err(e) => Ok(e.to_string()),
    }
}

/// Waits until the run's status satisfies `pred`, returning the run.
pub async fn wait_run(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&PipelineRun) -> bool,
) -> Result<PipelineRun> {
    let api: Api<PipelineRun> = Api::namespaced(client.clone(), ns);
    let last = Arc::new(Mutex::new(None));
    let res = wait_for(what, TIMEOUT, || {
        let api = api.clone();
        let last = last.clone();
        let pred = &pred;
        async move {
            let run = api.get(name).await?;
            let done = pred(&run);
            if let Ok(mut l) = last.lock() {
                *l = Some(run.status.clone());
            }
            Ok(done.then_some(run))
        }
    })
    .await;
    res.map_err(|e| {
        let last = last.lock().ok().and_then(|l| l.clone());
        anyhow!(
            "{e}; last status: {}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        )
    })
}

/// Jobs of a run, by name.
pub async fn job_names(client: &Client, ns: &str, run: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("streamflow.io/pipelinerun={run}")))
        .await?
        .items
        .iter()
        .map(|j| j.name_any())
        .collect();
    names.sort();
    Ok(names)
}

/// Events about a run: (reason, note).
pub async fn events(client: &Client, ns: &str, run: &str) -> Result<Vec<(String, String)>> {
    use k8s_openapi::api::events::v1::Event;
    Ok(Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(run))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

/// Waits until the run has at least `count` Events with `reason` (Events are published after
/// the status is written), returning all its Events.
pub async fn wait_events(
    client: &Client,
    ns: &str,
    run: &str,
    reason: &str,
    count: usize,
) -> Result<Vec<(String, String)>> {
    wait_for(
        &format!("{count} {reason} event(s) of {run}"),
        TIMEOUT,
        || async {
            let ev = events(client, ns, run).await?;
            Ok((ev.iter().filter(|e| e.0 == reason).count() >= count).then_some(ev))
        },
    )
    .await
}

/// Each Job of the namespace that has not finished, once, as a watch sees it. A watch, not a
/// poll: with a thousand Jobs, listing them all every few hundred ms would load the API server
/// more than the operator under test does.
fn new_jobs(client: Client, ns: &str) -> futures::stream::BoxStream<'static, Job> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let jobs: Api<Job> = Api::namespaced(client, ns);
    let mut seen = HashSet::new();
    watcher(jobs, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(move |job| {
            let fresh = job.ok().filter(|job| {
                let finished = job
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| !c.is_empty());
                !finished && seen.insert(job.uid().unwrap_or_default())
            });
            futures::future::ready(fresh)
        })
        .boxed()
}

/// A kubelet stand-in that runs nothing: it finishes every Job of the namespace `hold` after
/// seeing it, failing those whose `--interval` argument is in `failing`, and writes the Job's
/// status as the Job controller would. For tests of what creates runs, not of the stages.
pub struct InstantKubelet {
    pub failing: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InstantKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl InstantKubelet {
    pub fn start(client: Client, ns: &str, hold: Duration) -> InstantKubelet {
        let failing = Arc::new(Mutex::new(HashSet::new()));
        let ns = ns.to_owned();
        let failing2 = failing.clone();
        let task = tokio::spawn(async move {
            let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
            let mut new = new_jobs(client, &ns);
            while let Some(job) = new.next().await {
                let interval = job_interval(&job).unwrap_or_default();
                let fail = failing2
                    .lock()
                    .map(|f| f.contains(&interval))
                    .unwrap_or(false);
                let jobs = jobs.clone();
                tokio::spawn(async move {
                    let name = job.name_any();
                    if let Err(e) = finish_job(&jobs, &name, hold, !fail).await {
                        eprintln!("instant kubelet: Job {name}: {e:#}");
                    }
                });
            }
        });
        InstantKubelet { failing, task }
    }

    /// Jobs of these intervals (`START/END`) fail from now on; others succeed.
    pub fn fail(&self, intervals: &[String]) {
        if let Ok(mut f) = self.failing.lock() {
            f.clear();
            f.extend(intervals.iter().cloned());
        }
    }
}

/// The `--interval` argument of a Job's container.
pub fn job_interval(job: &Job) -> Option<String> {
    let args = job
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .args
        .clone()?;
    let i = args.iter().position(|a| a == "--interval")?;
    args.get(i + 1).cloned()
}

async fn finish_job(jobs: &Api<Job>, name: &str, hold: Duration, ok: bool) -> Result<()> {
    let started = now();
    jobs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"startTime": started, "active": 1}})),
    )
    .await?;
    // Stands for the work of the stage: the Job is active this long.
    tokio::time::sleep(hold).await;
    let finished = now();
    let cond = |t: &str, reason: &str| {
        json!({"type": t, "status": "True", "reason": reason, "message": reason,
            "lastProbeTime": finished, "lastTransitionTime": finished})
    };
    let status = if ok {
        json!({"startTime": started, "completionTime": finished, "active": 0, "succeeded": 1, "ready": 0,
            "conditions": [cond("SuccessCriteriaMet", "CompletionsReached"), cond("Complete", "CompletionsReached")]})
    } else {
        json!({"startTime": started, "active": 0, "failed": 1, "ready": 0,
            "conditions": [cond("FailureTarget", "BackoffLimitExceeded"), cond("Failed", "BackoffLimitExceeded")]})
    };
    jobs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

/// Watches the PipelineRuns of a namespace matching a label selector from before they
/// exist: the most that were active (not Succeeded or Failed) at any one time, and the order
/// in which they appeared. Every change comes through the watch, in order, so the count is
/// exact, not sampled.
pub struct RunWatch {
    pub max_active: Arc<Mutex<usize>>,
    pub order: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunWatch {
    pub async fn start(client: &Client, ns: &str, selector: &str) -> Result<RunWatch> {
        use futures::StreamExt;
        use kube::runtime::watcher;
        let api: Api<PipelineRun> = Api::namespaced(client.clone(), ns);
        let max_active = Arc::new(Mutex::new(0usize));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (max2, order2) = (max_active.clone(), order.clone());
        let config = watcher::Config::default().labels(selector);
        let task = tokio::spawn(async move {
            let mut active: BTreeMap<String, bool> = BTreeMap::new();
            let mut ready = Some(ready_tx);
            let mut stream = watcher(api, config).boxed();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::Apply(r)) | Ok(watcher::Event::InitApply(r)) => {
                        let name = r.name_any();
                        let is_active = !r.status.as_ref().is_some_and(|s| s.phase.is_finished());
                        if active.insert(name.clone(), is_active).is_none()
                            && let Ok(mut o) = order2.lock()
                        {
                            o.push(name);
                        }
                    }
                    Ok(watcher::Event::Delete(r)) => {
                        active.remove(&r.name_any());
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(watcher::Event::Init) => {}
                    Err(e) => eprintln!("run watch: {e}"),
                }
                let n = active.values().filter(|a| **a).count();
                if let Ok(mut m) = max2.lock() {
                    *m = (*m).max(n);
                }
            }
        });
        tokio::time::timeout(TIMEOUT, ready_rx)
            .await
            .context("the run watch did not start")??;
        Ok(RunWatch {
            max_active,
            order,
            task,
        })
    }

    pub fn max_active(&self) -> usize {
        self.max_active.lock().map(|m| *m).unwrap_or(usize::MAX)
    }

    pub fn order(&self) -> Vec<String> {
        self.order.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// PipelineRuns of a namespace matching a label selector.
pub async fn runs(client: &Client, ns: &str, selector: &str) -> Result<Vec<PipelineRun>> {
    Ok(Api::<PipelineRun>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

/// Events about an object of any kind: (reason, note).
pub async fn events_of(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Vec<(String, String)>> {
    use k8s_openapi::api::events::v1::Event;
    Ok(Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.name.as_deref() == Some(name) && r.kind.as_deref() == Some(kind))
        })
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}
