//! Schedule exploration: the real reconcilers against a simulated API server under a
//! deterministic scheduler (see `sim/mod.rs` for the model and the invariants).
//!
//! * `exhaustive_*`: every schedule within a delay bound of the default order, for small
//!   configurations (R-a, R-b, delete/re-create, scoped intent, restart, leader change).
//! * `random_schedules`: seeded random schedules of random scripts (templates flipping,
//!   deleted and re-created, constraints created, edited, re-scoped and deleted, restarts
//!   and leader changes), on one or two replicas.
//! * `*_is_caught`: with parts of the race fix switched off (Gatekeeper's strategy), the
//!   exploration must fail. If one of these passes without finding a failure, the harness
//!   has gone blind.
//! * `regressions`: the scenarios of the six controller bugs the exploration found (see
//!   the commit "controller: six races found by schedule exploration").
//! * `restart_with_bindings_writes_nothing`: item 31 in the model.
//! * `replay`: `VAPGEN_EXPLORE_SEED=<scenario>:<seed>` or `VAPGEN_EXPLORE_PATH=<scenario>:<path>`
//!   re-runs one schedule and prints its trace.
//!
//! Knobs: `VAPGEN_EXPLORE_RANDOM` (random schedules, default 6000), `VAPGEN_EXPLORE_FIRST_SEED`
//! (default 0; CI keeps the default so that runs are reproducible).

mod sim;

use std::time::Instant;

use sim::*;
use vapgen::controller::reconcile::Weakened;

const A: &str = "K8sAlpha";
const B: &str = "K8sBeta";

fn t(kind: &str, generate: Option<bool>) -> UserAct {
    UserAct::Template {
        kind: kind.into(),
        generate,
    }
}
fn c(kind: &str, name: &str, variant: u8) -> UserAct {
    UserAct::Constraint {
        kind: kind.into(),
        name: name.into(),
        variant,
    }
}
fn touch(kind: &str, name: &str) -> UserAct {
    UserAct::Touch {
        kind: kind.into(),
        name: name.into(),
    }
}

/// The named scenarios; `random` draws its set-up and script from `seed`.
fn scenario(name: &str, seed: u64) -> Scenario {
    let mut s = Scenario::new(name, &[A]);
    match name {
        // R-a (§5.1, item 29): false → true → false while a constraint reconciles.
        "ra" => {
            s.initial = vec![t(A, Some(false)), c(A, "c1", 0)];
            s.script = vec![t(A, Some(true)), touch(A, "c1"), t(A, Some(false))];
        }
        // R-b (§5.2, item 30): true → false → true with the constraint reconciler running.
        "rb" => {
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0)];
            s.script = vec![t(A, Some(false)), touch(A, "c1"), t(A, Some(true))];
        }
        // Item 32: the template deleted (and re-created) while constraints reconcile.
        "delete" => {
            s.initial = vec![t(A, None), c(A, "c1", 0), c(A, "c2", 1)];
            s.script = vec![
                UserAct::DeleteTemplate { kind: A.into() },
                c(A, "c1", 4),
                t(A, Some(true)),
            ];
        }
        // Scoped intent changes racing a flip.
        "scoped" => {
            s.initial = vec![t(A, Some(true)), c(A, "c1", 2)];
            s.script = vec![c(A, "c1", 3), t(A, Some(false)), c(A, "c1", 2), t(A, None)];
        }
        // Item 31: a restart in the middle of flips (a readiness wait on each replica).
        "restart" => {
            s.probe_not_ready = 1;
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0), c(A, "c2", 1)];
            s.script = vec![
                t(A, Some(false)),
                UserAct::Restart { slot: 0 },
                t(A, Some(true)),
            ];
        }
        // A leader paused past its lease while flips happen; it resumes later.
        "leader" => {
            s.replicas = 2;
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0)];
            s.script = vec![
                t(A, Some(false)),
                UserAct::LeaderChange,
                t(A, Some(true)),
                UserAct::LeaderChange,
            ];
        }
        // Regression (fixed): a constraint deleted just before a take-over. The follower had
        // dropped the key of the deletion, and the new leader requeued only live
        // constraints, so the binding dangled (`controller::requeue_keys` now also requeues
        // the owners of cached VAPs and bindings).
        "orphan" => {
            s.replicas = 2;
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0), c(A, "c2", 1)];
            s.script = vec![
                UserAct::DeleteConstraint {
                    kind: A.into(),
                    name: "c1".into(),
                },
                UserAct::LeaderChange,
            ];
        }
        // Regression (fixed): a new leader, whose record is Unknown, sees the template gone
        // and back. It published `Absent` under the lower-case template name and requeued
        // `k8salpha/c1` next to `K8sAlpha/c1`: two keys for one constraint, fighting over
        // the binding's owner reference.
        "gone-unknown" => {
            s.replicas = 2;
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0)];
            s.script = vec![
                UserAct::LeaderChange,
                UserAct::DeleteTemplate { kind: A.into() },
                t(A, Some(true)),
            ];
        }
        // Regression (fixed): the lease lost and won back, the two values coalesced in the
        // channel (the leadership loop saw `true` twice and did nothing), and a worker acting
        // on decisions of the earlier term before the new one had begun.
        "flip-back" => {
            s.replicas = 2;
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0), c(A, "c2", 2)];
            s.script = vec![
                UserAct::LeaderChange,
                t(A, Some(false)),
                touch(A, "c1"),
                UserAct::LeaderChange,
                t(A, Some(true)),
            ];
        }
        // Regression (fixed): a binding created just before a take-over, then the kind stops
        // generating. The new leader deleted the bindings its cache knew, then the VAP, and
        // the binding it had not seen yet outlived its policy (now the bindings of the kind
        // are listed from the API server before the VAP is deleted).
        "outlive" => {
            s.replicas = 2;
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0)];
            s.script = vec![c(A, "c2", 0), UserAct::LeaderChange, t(A, Some(false))];
        }
        // Regression (fixed): a constraint created just before a take-over. The new leader
        // had its binding in the cache (requeued as an owner) but not yet the constraint,
        // took it for deleted and deleted the binding of a live constraint (now it asks the
        // API server before deleting).
        "unseen" => {
            s.replicas = 2;
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0)];
            s.script = vec![c(A, "c2", 1), UserAct::LeaderChange];
        }
        // Regression (fixed): the leader's lease lapses (a renewal slower than the lease on
        // a loaded API server) and its late renewal lands; its manager never says `false`.
        // Writes refused by the fence meanwhile ended their reconciles as if done, and the
        // bindings stayed missing with an empty queue (now a fenced reconcile is retried,
        // and a replica that saw the lapse begins a new term when it holds the lease again).
        "lapse" => {
            s.replicas = 2;
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0)];
            s.script = vec![UserAct::Lapse, c(A, "c2", 0), c(A, "c1", 1)];
        }
        // The same on the only replica (no other replica can take the lease over).
        "lapse-single" => {
            s.initial = vec![t(A, Some(true))];
            s.script = vec![UserAct::Lapse, c(A, "c1", 0), t(A, Some(false)), t(A, None)];
        }
        // Regression (fixed): a reconcile that panics (a bug, or bad input the code did not
        // expect). The worker died before `done`, the key stayed "processing" and its kind
        // froze (now the panic is the key's outcome and it is retried with backoff).
        "panic" => {
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0)];
            s.script = vec![c(A, "c2", 0), c(A, "c1", 1)];
            s.panic_at_write = Some(1);
        }
        // The API server refuses or loses writes: 409, 422 (permanent until the resync),
        // 429, 503, and client timeouts before and after the write landed. The first two
        // controller writes of the explored part fail; everything must still converge.
        f if f.starts_with("fault-") => {
            let fault = match &f["fault-".len()..] {
                "409" => Fault::Conflict,
                "422" => Fault::Invalid,
                "429" => Fault::TooManyRequests,
                "503" => Fault::Unavailable,
                "timeout-lost" => Fault::TimeoutLost,
                "timeout-landed" => Fault::TimeoutLanded,
                other => panic!("unknown fault {other}"),
            };
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0)];
            s.script = vec![c(A, "c2", 0), t(A, Some(false)), t(A, Some(true))];
            s.faults = vec![(1, fault), (2, fault)];
        }
        // Regression: a status write that fails (503) after the binding was applied. The
        // reconcile used to log it and finish as done, so the status stayed stale for good.
        // The binding stays the same (deny, then scoped deny on vap.k8s.io), so no watch event
        // of the binding requeues the constraint: only the retry can fix the status.
        "status-lost" => {
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0)];
            s.script = vec![c(A, "c1", 2)];
            s.faults = vec![(1, Fault::Unavailable)];
        }
        // Watches that break with 410 Gone while events are in flight: the events are lost
        // and the relist is the only news of a deletion.
        "relist" => {
            s.initial = vec![t(A, Some(true)), c(A, "c1", 0), c(A, "c2", 1)];
            s.script = vec![
                UserAct::DeleteConstraint {
                    kind: A.into(),
                    name: "c1".into(),
                },
                t(A, Some(false)),
                c(A, "c3", 0),
                t(A, Some(true)),
            ];
            s.relists = 2;
        }
        "random" => random_scenario(&mut s, seed),
        other => panic!("unknown scenario {other}"),
    }
    s
}

fn random_scenario(s: &mut Scenario, seed: u64) {
    let mut r = Rng::new(seed ^ 0x5EED_5EED);
    let kinds: Vec<&str> = if r.chance(40) { vec![A, B] } else { vec![A] };
    s.kinds = kinds.iter().map(|k| (*k).to_string()).collect();
    s.replicas = if r.chance(35) { 2 } else { 1 };
    s.workers = 1 + r.below(2);
    s.fifo = r.chance(30);
    s.probe_not_ready = u32::from(r.chance(20));
    let names = ["c1", "c2", "c3"];
    let gen_of = |r: &mut Rng| match r.below(3) {
        0 => Some(true),
        1 => Some(false),
        _ => None,
    };
    for k in &kinds {
        if r.chance(85) {
            s.initial.push(t(k, gen_of(&mut r)));
        }
        for n in names.iter().take(1 + r.below(3)) {
            s.initial.push(c(k, n, r.below(VARIANTS.len()) as u8));
        }
    }
    let len = 3 + r.below(6);
    for _ in 0..len {
        let k = kinds[r.below(kinds.len())];
        let n = names[r.below(names.len())];
        let a = match r.below(100) {
            0..=34 => t(k, gen_of(&mut r)),
            35..=44 => UserAct::DeleteTemplate { kind: k.into() },
            45..=64 => c(k, n, r.below(VARIANTS.len()) as u8),
            65..=72 => touch(k, n),
            73..=80 => UserAct::DeleteConstraint {
                kind: k.into(),
                name: n.into(),
            },
            81..=88 => UserAct::Restart {
                slot: r.below(s.replicas),
            },
            89..=94 => UserAct::Lapse,
            _ => UserAct::LeaderChange,
        };
        s.script.push(a);
    }
    if r.chance(30) {
        for _ in 0..1 + r.below(2) {
            let at = 1 + r.below(10);
            s.faults.push((at, Fault::ALL[r.below(Fault::ALL.len())]));
        }
    }
    if r.chance(20) {
        s.relists = 1 + r.below(2);
    }
}

/// The fault kinds explored exhaustively. 429 and a timeout before the write reach the
/// controller as the same error as 503 (nothing written, retry with backoff); they run as
/// random schedules in `regressions`.
const FAULT_SCENARIOS: [&str; 5] = [
    "status-lost",
    "fault-409",
    "fault-422",
    "fault-503",
    "fault-timeout-landed",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Panics with the failure report and the replayed trace.
fn fail(f: &Failure, build: &dyn Fn(u64) -> Scenario) -> ! {
    let trace = replay_trace(f, build);
    panic!("{}", f.report(&trace));
}

fn replay_trace(f: &Failure, build: &dyn Fn(u64) -> Scenario) -> Vec<String> {
    let (scn, mut ch) = match (&f.seed, &f.path) {
        (Some(seed), _) => (build(*seed), Chooser::Random(Rng::new(*seed))),
        (_, Some(p)) => (build(0), Chooser::replay_path(p)),
        _ => return Vec::new(),
    };
    run_schedule(&scn, &mut ch, true).trace
}

fn exhaustive(name: &str, max_delays: usize) -> usize {
    let scn = scenario(name, 0);
    let start = Instant::now();
    match explore_dfs(&scn, max_delays, 200, 50_000) {
        Ok((n, complete)) => {
            println!(
                "{name}: {n} schedules within {max_delays} delays ({}) in {:.1?}",
                if complete {
                    "all of them"
                } else {
                    "budget reached"
                },
                start.elapsed()
            );
            n
        }
        Err(f) => fail(&f, &|s| scenario(name, s)),
    }
}

#[test]
fn exhaustive_ra_and_rb() {
    let n = exhaustive("ra", 3) + exhaustive("rb", 3);
    assert!(n > 100, "{n}");
}

#[test]
fn exhaustive_delete_scoped_restart_leader() {
    let n = exhaustive("delete", 2)
        + exhaustive("scoped", 2)
        + exhaustive("restart", 2)
        + exhaustive("leader", 2);
    assert!(n > 100, "{n}");
}

#[test]
fn random_schedules() {
    let first = env_u64("VAPGEN_EXPLORE_FIRST_SEED", 0);
    let count = env_u64("VAPGEN_EXPLORE_RANDOM", 6000);
    let start = Instant::now();
    match explore_random(&|s| scenario("random", s), first..first + count) {
        Ok(n) => println!(
            "random: {n} schedules (seeds {first}..{}) in {:.1?}",
            first + count,
            start.elapsed()
        ),
        Err(f) => fail(&f, &|s| scenario("random", s)),
    }
}

/// Writes slower than the lease (a lapse and a late renewal by the same replica) and a
/// panic inside a reconcile: every schedule within the delay bound converges with no
/// binding missing, dangling or without its policy.
#[test]
fn exhaustive_lapse_and_panic() {
    let n = exhaustive("lapse", 2) + exhaustive("lapse-single", 2) + exhaustive("panic", 2);
    assert!(n > 100, "{n}");
}

/// API errors on writes (409, 422, 429, 503, timeouts with and without the write landing) and
/// watch relists after 410 Gone: every schedule within the delay bound converges.
#[test]
fn exhaustive_api_faults_and_relists() {
    let mut n = 0;
    for name in FAULT_SCENARIOS {
        n += exhaustive(name, 2);
    }
    n += exhaustive("relist", 2);
    assert!(n > 100, "{n}");
}

/// The bugs the exploration found in the controller stay fixed.
#[test]
fn regressions() {
    for name in [
        "orphan",
        "gone-unknown",
        "flip-back",
        "outlive",
        "unseen",
        "lapse",
        "lapse-single",
        "panic",
        "fault-429",
        "fault-timeout-lost",
        "relist",
    ] {
        let start = Instant::now();
        match explore_random(&|s| scenario(name, s), 0..1000) {
            Ok(n) => println!("{name}: {n} schedules in {:.1?}", start.elapsed()),
            Err(f) => fail(&f, &|s| scenario(name, s)),
        }
    }
}

/// Searches `seeds` for a schedule of `name` (weakened) that violates `kind`.
fn find(name: &str, weakened: Weakened, kind: VKind, seeds: std::ops::Range<u64>) -> u64 {
    let build = |seed| {
        let mut s = scenario(name, seed);
        s.weakened = weakened;
        s
    };
    for seed in seeds.clone() {
        let mut ch = Chooser::Random(Rng::new(seed));
        let out = run_schedule(&build(seed), &mut ch, false);
        if out.violations.iter().any(|v| v.kind == kind) {
            let f = Failure {
                scenario: name.into(),
                seed: Some(seed),
                path: None,
                violations: out.violations,
            };
            println!(
                "found with {weakened:?} (as expected):\n{}",
                f.report(&replay_trace(&f, &build))
            );
            return seed;
        }
    }
    panic!(
        "no schedule of {name} with {weakened:?} violated {kind:?} in seeds {seeds:?}: the harness has gone blind"
    );
}

/// R-a with Gatekeeper's strategy: a binding created from a cached `true` dangles after
/// the template goes back to `false` (and was created while no VAP existed).
#[test]
fn gatekeeper_strategy_r_a_is_caught() {
    find("ra", Weakened::gatekeeper(), VKind::Dangling, 0..3000);
    find(
        "ra",
        Weakened::gatekeeper(),
        VKind::BindingWithoutPolicy,
        0..3000,
    );
}

/// R-b with Gatekeeper's strategy: the constraint reconciler reads the coalesced `false`,
/// deletes the binding, and nothing replays it when the template is `true` again.
#[test]
fn gatekeeper_strategy_r_b_is_caught() {
    find("rb", Weakened::gatekeeper(), VKind::Missing, 0..3000);
}

/// Naive template reads alone (vapgen's replay and binding clean-up kept) still create a
/// binding before its VAP exists in R-a.
#[test]
fn naive_template_reads_alone_are_caught() {
    let naive = Weakened {
        naive_template_reads: true,
        ..Weakened::default()
    };
    find("ra", naive, VKind::BindingWithoutPolicy, 0..3000);
}

/// Item 31 (restart safety in the model): with bindings present, restarting the only
/// replica writes nothing at all — no delete, no rewrite.
#[test]
fn restart_with_bindings_writes_nothing() {
    let mut s = Scenario::new("restart-only", &[A, B]);
    for k in [A, B] {
        s.initial.push(t(k, None));
        for i in 0..5 {
            s.initial.push(c(k, &format!("c{i}"), (i % 3) as u8));
        }
    }
    s.script = vec![UserAct::Restart { slot: 0 }];
    for seed in 0..200 {
        let mut ch = Chooser::Random(Rng::new(seed));
        let out = run_schedule(&s, &mut ch, false);
        assert!(out.violations.is_empty(), "{:?}", out.violations);
        assert!(
            out.writes.is_empty(),
            "seed {seed}: a restart wrote {:?}",
            out.writes
        );
    }
}

#[test]
fn replay() {
    let (spec, seed_mode) = match (
        std::env::var("VAPGEN_EXPLORE_SEED"),
        std::env::var("VAPGEN_EXPLORE_PATH"),
    ) {
        (Ok(s), _) => (s, true),
        (_, Ok(p)) => (p, false),
        _ => return,
    };
    let (name, arg) = spec
        .split_once(':')
        .expect("<scenario>:<seed> or <scenario>:<path>");
    let (scn, mut ch) = if seed_mode {
        let seed: u64 = arg.parse().expect("seed");
        (scenario(name, seed), Chooser::Random(Rng::new(seed)))
    } else {
        (scenario(name, 0), Chooser::replay_path(arg))
    };
    let out = run_schedule(&scn, &mut ch, true);
    println!("scenario {name}: {scn:#?}");
    for l in &out.trace {
        println!("{l}");
    }
    println!("violations: {:#?}", out.violations);
    assert!(out.violations.is_empty());
}
