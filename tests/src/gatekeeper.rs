//! A control plane of its own with the **real Gatekeeper** beside it, for the coexist tests.
//!
//! `./test` runs the other cluster tests against one shared control plane; a Gatekeeper
//! webhook there would see (and could slow or deny) all of their writes. So a test that needs
//! Gatekeeper asks for [`GatekeeperControlPlane::start`]: it starts a second etcd +
//! kube-apiserver in a run dir of its own (`/dev/shm/vapgen-cp-gk-<pid>-<n>`) with
//! `tests/control-plane/up`, then Gatekeeper with `tests/control-plane/gatekeeper-up`
//! (operations webhook, audit and status: `generate` off, as vapgen's coexist mode wants), and
//! stops both on drop with `tests/control-plane/down`.
//!
//! The binaries come from `${VAPGEN_CACHE:-~/.cache/vapgen}` (`tests/control-plane/build`).
//! Under `CI=true` everything missing is built (minutes on a cold cache) and any failure to
//! start panics; outside CI a missing binary or a failed start skips the test **loudly**
//! (`SKIPPED (no Gatekeeper): …` on stderr) and [`GatekeeperControlPlane::start`] returns
//! `None`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Set to `1` to leave the control plane and Gatekeeper running after the test (their run dir
/// is printed; stop them with `VAPGEN_CP_DIR=<dir> tests/control-plane/down`).
pub const KEEP_ENV: &str = "VAPGEN_KEEP_GATEKEEPER_CP";

/// Prefix of the run dirs (followed by `<pid>-<n>`).
const DIR_PREFIX: &str = "vapgen-cp-gk-";

/// How Gatekeeper is started (`tests/control-plane/gatekeeper-up`'s knobs).
#[derive(Debug, Clone)]
pub struct GatekeeperOptions {
    /// Also run Gatekeeper's `generate` operation (`VAPGEN_GATEKEEPER_GENERATE=1`): it creates
    /// the constraint CRDs, VAPs and bindings itself. Off by default, as vapgen's coexist mode
    /// wants.
    pub generate: bool,
    /// Its `--default-wait-for-vapb-generation` in seconds (upstream default 30).
    pub wait_for_vapb_seconds: u32,
    /// Its `--audit-interval` in seconds.
    pub audit_interval_seconds: u32,
    /// More manager flags (`VAPGEN_GATEKEEPER_ARGS`), e.g.
    /// `--default-create-vap-binding-for-constraints=false`.
    pub extra_args: Vec<String>,
}

impl Default for GatekeeperOptions {
    /// `generate` off, upstream's 30 s wait before bindings, audit every 5 s (short enough
    /// that audit writes constraint status while a test runs).
    fn default() -> Self {
        GatekeeperOptions {
            generate: false,
            wait_for_vapb_seconds: 30,
            audit_interval_seconds: 5,
            extra_args: Vec::new(),
        }
    }
}

/// A running etcd + kube-apiserver + Gatekeeper started for one test, stopped on drop.
#[derive(Debug)]
pub struct GatekeeperControlPlane {
    dir: PathBuf,
    env: Vec<(String, String)>,
    /// How long `up` took (etcd + kube-apiserver ready; includes a build on a cache miss).
    pub up_time: std::time::Duration,
    /// How long `gatekeeper-up` took (CRDs, start, readiness, webhook reached).
    pub gatekeeper_time: std::time::Duration,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn control_plane_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("control-plane")
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("VAPGEN_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/vapgen"),
    }
}

/// `NAME=value` from `tests/control-plane/versions.env`.
fn version(name: &str) -> Option<String> {
    let text = std::fs::read_to_string(control_plane_dir().join("versions.env")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
}

/// The cached binaries `up` and `gatekeeper-up` need, with the ones that are missing.
fn missing_binaries() -> Vec<PathBuf> {
    let cache = cache_dir();
    let k8s = version("K8S_VERSION").unwrap_or_default();
    let etcd = version("ETCD_VERSION").unwrap_or_default();
    let gk = version("GATEKEEPER_VERSION").unwrap_or_default();
    [
        cache.join(format!("k8s-{k8s}/kube-apiserver")),
        cache.join(format!("k8s-{k8s}/kubectl")),
        cache.join(format!("etcd-{etcd}/etcd")),
        cache.join(format!("gatekeeper-{gk}/manager")),
        cache.join(format!("gatekeeper-{gk}/gatekeeper-crds.yaml")),
    ]
    .into_iter()
    .filter(|p| !p.is_file())
    .collect()
}

/// Skips loudly outside CI (returns `None`), panics under `CI=true`.
fn give_up(msg: &str) -> Option<GatekeeperControlPlane> {
    if ci() {
        panic!("CI=true and the Gatekeeper control plane is not available: {msg}");
    }
    eprintln!("SKIPPED (no Gatekeeper): {msg}");
    None
}

/// Parses `export NAME=value` lines.
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The last `lines` lines of a log, each cut to 400 characters (Gatekeeper's JSON lines carry
/// long stack traces).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.chars().take(400).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a control-plane script with `VAPGEN_CP_DIR=dir`; `Err` with its stderr on failure.
fn run_script(script: &str, dir: &Path) -> Result<String, String> {
    let path = control_plane_dir().join(script);
    let out = Command::new(&path)
        .env("VAPGEN_CP_DIR", dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{script} failed ({}); its stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Stops the control planes of earlier test processes that died without dropping theirs
/// (run dirs `vapgen-cp-gk-<pid>-*` whose pid is gone). `down` kills only the processes it
/// recorded, checked by start time, so this never hits anything else.
fn reap_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!(
                "gatekeeper: stopping the stale control plane in {}",
                e.path().display()
            );
            if let Err(msg) = run_script("down", &e.path()) {
                eprintln!("gatekeeper: {msg}");
            }
        }
    }
}

impl GatekeeperControlPlane {
    /// Starts a control plane of its own and Gatekeeper beside it (blocking: about 5 s for the
    /// control plane and a few seconds for Gatekeeper on a cache hit).
    ///
    /// Returns `None` after a loud `SKIPPED` message outside CI when a binary is not built or
    /// the start fails.
    ///
    /// # Panics
    ///
    /// Under `CI=true`, if anything fails (with the scripts' output and the log tails).
    pub fn start() -> Option<Self> {
        Self::start_with(&GatekeeperOptions::default())
    }

    /// [`GatekeeperControlPlane::start`] with Gatekeeper started as `opts` say.
    ///
    /// # Panics
    ///
    /// Under `CI=true`, if anything fails.
    pub fn start_with(opts: &GatekeeperOptions) -> Option<Self> {
        let missing = missing_binaries();
        if !missing.is_empty() && !ci() {
            return give_up(&format!(
                "not built: {}. Build them with tests/control-plane/build (a cold Gatekeeper \
                 build takes minutes), then rerun.",
                missing
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        reap_stale(&base);
        let dir = base.join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let t = Instant::now();
        if let Err(msg) = run_script("up", &dir) {
            return give_up(&msg);
        }
        let up_time = t.elapsed();
        // From here on, Drop stops what was started, also when Gatekeeper does not come up.
        let mut cp = GatekeeperControlPlane {
            env: Vec::new(),
            dir,
            up_time,
            gatekeeper_time: std::time::Duration::ZERO,
        };
        if let Err(msg) = cp.gatekeeper_up(opts) {
            return give_up(&msg);
        }
        eprintln!(
            "gatekeeper: control plane up in {:.1} s, Gatekeeper up in {:.1} s ({})",
            cp.up_time.as_secs_f64(),
            cp.gatekeeper_time.as_secs_f64(),
            cp.dir.display()
        );
        Some(cp)
    }

    /// Runs `gatekeeper-up` with `opts`, then reads the exported values.
    fn gatekeeper_up(&mut self, opts: &GatekeeperOptions) -> Result<(), String> {
        let t = Instant::now();
        let gk = Command::new(control_plane_dir().join("gatekeeper-up"))
            .env("VAPGEN_CP_DIR", &self.dir)
            .env(
                "VAPGEN_GATEKEEPER_AUDIT_INTERVAL",
                opts.audit_interval_seconds.to_string(),
            )
            .env(
                "VAPGEN_GATEKEEPER_GENERATE",
                if opts.generate { "1" } else { "0" },
            )
            .env(
                "VAPGEN_GATEKEEPER_WAIT_FOR_VAPB",
                opts.wait_for_vapb_seconds.to_string(),
            )
            .env("VAPGEN_GATEKEEPER_ARGS", opts.extra_args.join(" "))
            .output();
        match gk {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(format!(
                    "gatekeeper-up failed ({}); its stderr:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Err(e) => return Err(format!("cannot run gatekeeper-up: {e}")),
        }
        self.gatekeeper_time = t.elapsed();
        let mut env = String::new();
        for f in ["env", "env-gatekeeper"] {
            env += &std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        }
        self.env = parse_env(&env);
        Ok(())
    }

    /// Stops Gatekeeper (`gatekeeper-down`: its webhook configuration, then the process) and
    /// starts it again as `opts` say; the control plane and every object stay. Blocking.
    ///
    /// # Panics
    ///
    /// If either script fails (the test asked for a Gatekeeper it then cannot have).
    pub fn restart_gatekeeper(&mut self, opts: &GatekeeperOptions) {
        if let Err(msg) = run_script("gatekeeper-down", &self.dir) {
            panic!("{msg}");
        }
        if let Err(msg) = self.gatekeeper_up(opts) {
            panic!(
                "{msg}\nlast lines of the log:\n{}",
                self.gatekeeper_log_tail(30)
            );
        }
    }

    /// A value `up` or `gatekeeper-up` exported (`VAPGEN_TEST_KUBECONFIG`,
    /// `VAPGEN_GATEKEEPER_WEBHOOK_URL`, …).
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The run dir (certificates, logs, pids).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig of this control plane.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// This control plane's API server audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// Gatekeeper's log.
    pub fn gatekeeper_log(&self) -> PathBuf {
        self.dir.join("gatekeeper.log")
    }

    /// The URL of Gatekeeper's prometheus `/metrics`.
    pub fn gatekeeper_metrics_url(&self) -> Option<&str> {
        self.env("VAPGEN_GATEKEEPER_METRICS")
    }

    /// An admin client (`system:masters`) for this control plane. Make one per runtime.
    ///
    /// # Panics
    ///
    /// If the kubeconfig cannot be read or a client cannot be built.
    pub async fn client(&self) -> Client {
        let path = self.kubeconfig();
        let kubeconfig = Kubeconfig::read_from(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        Client::try_from(config).unwrap_or_else(|e| panic!("building a kube client: {e}"))
    }

    /// The last `lines` lines of Gatekeeper's log.
    pub fn gatekeeper_log_tail(&self, lines: usize) -> String {
        tail(&self.gatekeeper_log(), lines)
    }
}

impl Drop for GatekeeperControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "gatekeeper: the test failed; last lines of {}:\n{}",
                self.gatekeeper_log().display(),
                self.gatekeeper_log_tail(30)
            );
        }
        if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
            eprintln!(
                "gatekeeper: {KEEP_ENV}=1, leaving the control plane running in {}; stop it with \
                 VAPGEN_CP_DIR={} tests/control-plane/down",
                self.dir.display(),
                self.dir.display()
            );
            return;
        }
        if let Err(msg) = run_script("down", &self.dir) {
            eprintln!("gatekeeper: {msg}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_export_lines() {
        let env = parse_env("export A=/x/y\n# no\nexport B=1\n");
        assert_eq!(
            env,
            vec![
                ("A".to_owned(), "/x/y".to_owned()),
                ("B".to_owned(), "1".to_owned())
            ]
        );
    }

    #[test]
    fn versions_env_names_gatekeeper() {
        let v = version("GATEKEEPER_VERSION").expect("GATEKEEPER_VERSION in versions.env");
        assert!(v.starts_with("v3."), "{v}");
    }
}
