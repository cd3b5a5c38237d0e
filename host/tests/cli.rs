//! The `vapgen` binary as a shell user runs it (no cluster needed).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// `vapgen plan … | head -1`: the reader goes away after one line of a large output. vapgen
/// stops quietly with 141 (128 + SIGPIPE, as a shell reports a tool killed by SIGPIPE); it
/// used to panic ("failed printing to stdout: Broken pipe", exit 101).
#[test]
fn plan_into_a_closed_pipe_stops_quietly() {
    // Enough constraints that the output is far larger than a pipe's buffer (64 KiB).
    let dir = std::env::temp_dir().join(format!("vapgen-cli-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(
        examples().join("requiredlabels/template.yaml"),
        dir.join("template.yaml"),
    )
    .expect("template");
    let mut f = std::fs::File::create(dir.join("constraints.yaml")).expect("constraints");
    for i in 0..2000 {
        writeln!(
            f,
            "---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\n\
             metadata:\n  name: c{i}\nspec:\n  match:\n    kinds:\n    - apiGroups: [\"\"]\n      \
             kinds: [\"Namespace\"]\n  parameters:\n    labels: [\"owner\"]"
        )
        .expect("write");
    }
    drop(f);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vapgen"))
        .args(["plan", "-f"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vapgen plan");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    // The reader is dropped here: the rest of the output meets a closed pipe.
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert!(!first.is_empty(), "a first line was printed");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(141), "stderr: {stderr}");
}

/// Runs `vapgen args…` with `stdin`, returning (exit code, stdout, stderr).
fn vapgen(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vapgen"))
        .args(args)
        .current_dir(examples())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vapgen");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("vapgen");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `kind:` of each top-level object of a YAML stream, in order.
fn kinds(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::to_owned)
        .collect()
}

/// Whether a YAML stream holds a ValidatingAdmissionPolicyBinding.
fn has_binding(yaml: &str) -> bool {
    kinds(yaml)
        .iter()
        .any(|k| k == "ValidatingAdmissionPolicyBinding")
}

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vapgen-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Safe render: the constraint CRD comes before its policy, then the bindings; the summary
/// goes to stderr, so stdout is only objects.
#[test]
fn plan_emits_the_crd_first_and_only_objects_on_stdout() {
    let (code, out, err) = vapgen(&["plan", "-f", "requiredlabels"], "");
    assert_eq!(code, 0, "{err}");
    let k = kinds(&out);
    assert_eq!(k[0], "CustomResourceDefinition", "{out}");
    assert_eq!(k[1], "ValidatingAdmissionPolicy", "{out}");
    assert!(
        k[2..]
            .iter()
            .all(|k| k == "ValidatingAdmissionPolicyBinding"),
        "{k:?}"
    );
    assert!(!out.contains("\n# "), "summary leaked into stdout: {out}");
    assert!(err.contains("template k8srequiredlabels"), "{err}");
}

/// `--crds=false` leaves the CRDs out and warns about each Fail policy's paramKind.
#[test]
fn plan_without_crds_warns_about_the_param_kind() {
    let (code, out, err) = vapgen(&["plan", "--crds=false", "-f", "requiredlabels"], "");
    assert_eq!(code, 0, "{err}");
    assert!(!kinds(&out).iter().any(|k| k == "CustomResourceDefinition"));
    assert!(err.contains("paramKind K8sRequiredLabels"), "{err}");
}

/// `-f -` reads stdin; `-f a,b` takes several paths; `-o json` prints one v1 List;
/// `--summary=json` prints the counts on stderr.
#[test]
fn plan_reads_stdin_and_comma_paths_and_prints_json() {
    let template =
        std::fs::read_to_string(examples().join("requiredlabels/template.yaml")).expect("template");
    let (code, out, err) = vapgen(
        &[
            "plan",
            "-f",
            "-,requiredlabels/constraints.yaml",
            "-o",
            "json",
            "--summary=json",
        ],
        &template,
    );
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("stdout is JSON");
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items[0]["kind"], "CustomResourceDefinition");
    let summary: serde_json::Value = serde_json::from_str(&err).expect("stderr is JSON");
    assert_eq!(summary["counts"]["errors"], 0);
    assert_eq!(summary["counts"]["crds"], 1);
    assert_eq!(summary["counts"]["policies"], 1);
    assert_eq!(
        summary["counts"]["bindings"].as_u64(),
        Some(items.len() as u64 - 2)
    );
    assert!(
        summary["templates"][0]["origin"]
            .as_str()
            .is_some_and(|o| o.starts_with("<stdin>")),
        "{summary}"
    );
}

/// Input that cannot be right is an error (exit 1, message on stderr), never a clean run:
/// an empty directory, a 0-byte file, a duplicated template, a duplicated constraint, a
/// constraint name the API server refuses.
#[test]
fn plan_refuses_empty_duplicate_and_invalid_input() {
    let dir = scratch("bad-input");
    std::fs::create_dir_all(dir.join("empty")).expect("dir");
    std::fs::write(dir.join("zero.yaml"), "").expect("file");
    let empty = dir.join("empty").display().to_string();
    let zero = dir.join("zero.yaml").display().to_string();
    for path in [&empty, &zero] {
        let (code, out, err) = vapgen(&["plan", "-f", path], "");
        assert_eq!(code, 1, "{path}: {err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains("no object found"), "{err}");
        assert!(err.contains("no ConstraintTemplate or constraint"), "{err}");
    }

    let template = examples().join("requiredlabels/template.yaml");
    std::fs::copy(&template, dir.join("copy.yaml")).expect("copy");
    let copy = dir.join("copy.yaml").display().to_string();
    let (code, _, err) = vapgen(&["plan", "-f", "requiredlabels", "-f", &copy], "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("duplicate ConstraintTemplate name"), "{err}");

    let constraint = "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\n\
                      metadata:\n  name: NAME\nspec:\n  parameters:\n    labels: [a]\n";
    let twice = format!(
        "{}---\n{}",
        constraint.replace("NAME", "twice"),
        constraint.replace("NAME", "twice")
    );
    let (code, _, err) = vapgen(
        &["plan", "-f", "requiredlabels/template.yaml", "-f", "-"],
        &twice,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("duplicate constraint"), "{err}");

    for bad in ["Upper", "ünï", "-dash"] {
        let (code, out, err) = vapgen(
            &["plan", "-f", "requiredlabels/template.yaml", "-f", "-"],
            &constraint.replace("NAME", &format!("{bad:?}")),
        );
        assert_eq!(code, 1, "{bad}: {err}");
        assert!(err.contains("not a valid object name"), "{bad}: {err}");
        assert!(!has_binding(&out), "{bad}: a binding was rendered: {out}");
    }
}

/// A selector Gatekeeper's webhook refuses is an input error, as for Gatekeeper (the
/// constraint never exists); a valid one is planned.
#[test]
fn plan_refuses_selectors_that_are_no_label_selectors() {
    let constraint = |expr: &str| {
        format!(
            "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\n\
             metadata:\n  name: sel\nspec:\n  match:\n    namespaceSelector:\n      \
             matchExpressions: [{expr}]\n  parameters:\n    labels: [a]\n"
        )
    };
    for (expr, field) in [
        (
            "{key: env, operator: Bogus}",
            "matchExpressions[0].operator",
        ),
        ("{key: env, operator: In}", "matchExpressions[0].values"),
        (
            "{key: env, operator: Exists, values: [a]}",
            "matchExpressions[0].values",
        ),
    ] {
        let (code, out, err) = vapgen(
            &["plan", "-f", "requiredlabels/template.yaml", "-f", "-"],
            &constraint(expr),
        );
        assert_eq!(code, 1, "{expr}: {err}");
        assert!(
            err.contains(&format!("spec.match.namespaceSelector.{field}")),
            "{expr}: {err}"
        );
        assert!(!has_binding(&out), "{expr}: a binding was rendered: {out}");
    }
    let (code, out, err) = vapgen(
        &["plan", "-f", "requiredlabels/template.yaml", "-f", "-"],
        &constraint("{key: env, operator: In, values: [prod]}"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(has_binding(&out), "{out}");
}

/// What Gatekeeper's constraint CRD refuses in `spec.match` is an input error too: globs off its
/// wildcard pattern, `kinds` that is no list, an unknown `source`; `**` fits the pattern.
#[test]
fn plan_refuses_what_the_constraint_crd_refuses_in_match() {
    let constraint = |m: &str| {
        format!(
            "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\n\
             metadata:\n  name: m\nspec:\n  match: {m}\n  parameters:\n    labels: [a]\n"
        )
    };
    let plan = |m: &str| {
        vapgen(
            &["plan", "-f", "requiredlabels/template.yaml", "-f", "-"],
            &constraint(m),
        )
    };
    for (m, field) in [
        ("{namespaces: [prod, a*b]}", "spec.match.namespaces[1]"),
        (
            "{excludedNamespaces: [Prod]}",
            "spec.match.excludedNamespaces[0]",
        ),
        ("{name: kube_system}", "spec.match.name"),
        ("{kinds: {kinds: [Pod]}}", "spec.match.kinds"),
        ("{source: Elsewhere}", "spec.match.source"),
    ] {
        let (code, _, err) = plan(m);
        assert_eq!(code, 1, "{m}: {err}");
        assert!(err.contains(field), "{m}: {err}");
    }
    for m in [
        "{namespaces: ['**', 'kube-*', '*-system', 'a:b']}",
        "{kinds: [{apiGroups: [''], kinds: [Pod]}], scope: Namespaced, source: All}",
    ] {
        let (code, out, err) = plan(m);
        assert_eq!(code, 0, "{m}: {err}");
        assert!(has_binding(&out), "{m}: {out}");
    }
}

/// The rest of Gatekeeper's constraint CRD schema is checked too (issue #13, F2): parameters
/// against the template's `openAPIV3Schema`, the 63-character name limit, fields the schema
/// does not know; a v1beta1 template's parameters keep unknown fields (`legacySchema`).
#[test]
fn plan_refuses_what_the_constraint_crd_schema_refuses() {
    let constraint = |name: &str, spec: &str| {
        format!(
            "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\n\
             metadata:\n  name: {name}\n  labels: {{team: a}}\nspec:\n{spec}"
        )
    };
    let long = "n".repeat(64);
    for (name, spec, says) in [
        (
            "p",
            "  parameters:\n    labels: owner\n",
            "spec.parameters.labels: Invalid value: \"string\": must be of type array",
        ),
        (
            "p",
            "  parameters:\n    labels: [a, 1]\n",
            "spec.parameters.labels[1]: Invalid value: \"number\": must be of type string",
        ),
        (
            long.as_str(),
            "  parameters:\n    labels: [a]\n",
            "metadata.name: Too long: may not be more than 63 characters",
        ),
        (
            "u",
            "  parameters:\n    labels: [a]\n    extra: 1\n  enforcementActions: deny\n",
            "unknown fields: spec.enforcementActions, spec.parameters.extra",
        ),
    ] {
        let (code, out, err) = vapgen(
            &["plan", "-f", "requiredlabels/template.yaml", "-f", "-"],
            &constraint(name, spec),
        );
        assert_eq!(code, 1, "{spec}: {err}");
        assert!(
            err.contains("its constraint CRD refuses it"),
            "{spec}: {err}"
        );
        assert!(err.contains(says), "{spec}: {err}");
        assert!(!has_binding(&out), "{spec}: a binding was rendered: {out}");
    }
    // The same template as v1beta1: legacySchema keeps unknown parameters; types still count.
    let v1beta1 = std::fs::read_to_string(examples().join("requiredlabels/template.yaml"))
        .unwrap()
        .replace(
            "templates.gatekeeper.sh/v1\n",
            "templates.gatekeeper.sh/v1beta1\n",
        );
    let dir = scratch("legacy-schema");
    std::fs::write(dir.join("template.yaml"), v1beta1).unwrap();
    let template = dir.join("template.yaml");
    let template = template.to_str().unwrap();
    let (code, out, err) = vapgen(
        &["plan", "-f", template, "-f", "-"],
        &constraint("u", "  parameters:\n    labels: [a]\n    extra: 1\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(has_binding(&out), "{out}");
    let (code, _, err) = vapgen(
        &["plan", "-f", template, "-f", "-"],
        &constraint("p", "  parameters:\n    labels: owner\n"),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("must be of type array"), "{err}");
}

/// YAML 1.1 booleans as kubectl reads them: `generateVAP: no` opts the template out.
#[test]
fn plan_reads_yaml_1_1_booleans_as_kubectl() {
    let template = std::fs::read_to_string(examples().join("requiredlabels/template.yaml"))
        .expect("template")
        .replace(
            "      source:\n",
            "      source:\n        generateVAP: no\n",
        );
    assert!(template.contains("generateVAP: no"));
    let (code, out, err) = vapgen(&["plan", "-f", "-"], &template);
    assert_eq!(code, 0, "{err}");
    assert!(
        !kinds(&out).iter().any(|k| k == "ValidatingAdmissionPolicy"),
        "{out}"
    );
    assert!(err.contains("skip (source.generateVAP: false)"), "{err}");
}

/// `vapgen test` on a directory without cases fails instead of passing nothing.
#[test]
fn test_without_cases_is_an_error() {
    let dir = scratch("no-cases");
    let (code, _, err) = vapgen(&["test", &dir.display().to_string()], "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no test case found"), "{err}");
}

/// `vapgen completion bash` prints a completion script naming the subcommands.
#[test]
fn completion_scripts_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = vapgen(&["completion", shell], "");
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(
            out.contains("plan") && out.contains("describe"),
            "{shell}: {out}"
        );
    }
}

/// The generated CEL is checked offline: a syntax error or an undeclared variable is an
/// error (exit 1) where plan used to say "generated, 0 errors"; an unknown function warns.
#[test]
fn plan_checks_the_generated_cel() {
    let template =
        std::fs::read_to_string(examples().join("requiredlabels/template.yaml")).expect("template");
    let original = "expression: 'size(variables.missing) == 0'";
    assert!(template.contains(original));
    for (bad, wanted, code) in [
        (
            "expression: 'size(variables.missing) =='",
            "CEL syntax error",
            1,
        ),
        (
            "expression: 'size(variables.nope) == 0'",
            "undeclared reference to variables.nope",
            1,
        ),
        (
            "expression: 'size(missing) == 0'",
            "undeclared reference to \"missing\"",
            1,
        ),
        (
            "expression: 'variables.missing.frob() == 0'",
            "unknown function frob",
            0,
        ),
    ] {
        let (got, _, err) = vapgen(&["plan", "-f", "-"], &template.replace(original, bad));
        assert_eq!(got, code, "{bad}: {err}");
        assert!(err.contains(wanted), "{bad}: {err}");
    }
}

/// The two-step apply: `--bindings=false` prints CRDs and policies only, `--only-bindings`
/// the bindings only; together they are the whole output.
#[test]
fn plan_splits_the_output_for_a_two_step_apply() {
    let (_, all, _) = vapgen(&["plan", "-f", "requiredlabels", "--summary=none"], "");
    let (c1, first, e1) = vapgen(&["plan", "-f", "requiredlabels", "--bindings=false"], "");
    let (c2, second, e2) = vapgen(&["plan", "-f", "requiredlabels", "--only-bindings"], "");
    assert_eq!((c1, c2), (0, 0), "{e1}{e2}");
    assert_eq!(
        kinds(&first),
        ["CustomResourceDefinition", "ValidatingAdmissionPolicy"]
    );
    assert!(
        !kinds(&second).is_empty()
            && kinds(&second)
                .iter()
                .all(|k| k == "ValidatingAdmissionPolicyBinding"),
        "{second}"
    );
    assert_eq!(format!("{first}{second}"), all);
}

/// Gatekeeper's objects that scope sync reads, as a ValidatingWebhookConfiguration and a
/// Config in one YAML stream (`name`: the webhook configuration's name).
fn scope_objects(name: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: {name}
webhooks:
- name: check-ignore-label.gatekeeper.sh
  rules:
  - apiGroups: [""]
    apiVersions: ["*"]
    operations: ["CREATE", "UPDATE"]
    resources: ["namespaces"]
- name: validation.gatekeeper.sh
  matchPolicy: Exact
  namespaceSelector:
    matchExpressions:
    - key: admission.gatekeeper.sh/ignore
      operator: DoesNotExist
  rules:
  - apiGroups: ["apps"]
    apiVersions: ["v1"]
    operations: ["CREATE"]
    resources: ["deployments"]
    scope: Namespaced
---
apiVersion: config.gatekeeper.sh/v1alpha1
kind: Config
metadata:
  name: config
  namespace: gatekeeper-system
spec:
  match:
  - excludedNamespaces: ["kube-*"]
    processes: ["webhook"]
  - excludedNamespaces: ["audit-only"]
    processes: ["audit"]
"#
    )
}

/// The policy of a `plan -o json` run.
fn policy_of(out: &str) -> serde_json::Value {
    let list: serde_json::Value = serde_json::from_str(out).expect("stdout is JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .cloned()
        .expect("a policy")
}

/// Scope sync in `plan` (on by default, as in `vapgen run`): the webhook configuration and
/// the Config among the `-f` inputs and the exempt-namespace flags shape the VAP as
/// Gatekeeper's `TemplateToPolicyDefinitionWithWebhookConfig` does, and the summary says so
/// and from which objects.
#[test]
fn plan_syncs_the_vap_scope_from_the_webhook_configuration_config_and_flags() {
    let dir = scratch("scope-sync");
    std::fs::write(
        dir.join("gatekeeper.yaml"),
        scope_objects("gatekeeper-validating-webhook-configuration"),
    )
    .expect("write");
    let gk = dir.join("gatekeeper.yaml");
    let gk = gk.to_str().unwrap();
    let (code, out, err) = vapgen(
        &[
            "plan",
            "-f",
            &format!("requiredlabels,{gk}"),
            "-o",
            "json",
            "--exempt-namespace=team-a",
            "--exempt-namespace-prefix=sys-",
            "--exempt-namespace-suffix=-tmp",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let vap = policy_of(&out);
    let mc = &vap["spec"]["matchConstraints"];
    assert_eq!(mc["matchPolicy"], "Exact", "{mc}");
    assert_eq!(
        mc["namespaceSelector"]["matchExpressions"][0]["key"], "admission.gatekeeper.sh/ignore",
        "{mc}"
    );
    assert_eq!(
        mc["resourceRules"],
        serde_json::json!([{"apiGroups": ["apps"], "apiVersions": ["v1"],
            "operations": ["CREATE"], "resources": ["deployments"], "scope": "Namespaced"}])
    );
    let conditions = vap["spec"]["matchConditions"].to_string();
    assert!(
        conditions.contains("gatekeeper_internal_match_global_excluded_namespaces"),
        "{conditions}"
    );
    assert!(conditions.contains("kube-*"), "{conditions}");
    assert!(!conditions.contains("audit-only"), "{conditions}");
    for p in ["team-a", "sys-*", "*-tmp"] {
        assert!(conditions.contains(p), "{p}: {conditions}");
    }
    assert!(err.contains("scope sync: webhook validation.gatekeeper.sh of ValidatingWebhookConfiguration gatekeeper-validating-webhook-configuration"), "{err}");
    assert!(err.contains("Config ("), "{err}");
    assert!(err.contains("1 excluded namespace(s)"), "{err}");
    assert!(err.contains("3 exempt namespace pattern(s)"), "{err}");
    assert!(
        !err.contains("ignored"),
        "scope sync's inputs are not ignored: {err}"
    );

    // JSON summary: which objects, and what was taken from them.
    let (code, _, err) = vapgen(
        &[
            "plan",
            "-f",
            &format!("requiredlabels,{gk}"),
            "--summary=json",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&err).expect("stderr is JSON");
    let s = &summary["scopeSync"];
    assert_eq!(s["webhook"], true, "{summary}");
    assert!(
        s["webhookConfiguration"]
            .as_str()
            .is_some_and(|o| o.contains("gatekeeper.yaml")),
        "{s}"
    );
    assert_eq!(s["excludedNamespaces"], serde_json::json!(["kube-*"]));
    assert_eq!(s["exemptNamespaces"], serde_json::json!([]));

    // `--sync-vap-enforcement-scope=false`: Gatekeeper's objects are ignored, the default rule.
    let (code, out, err) = vapgen(
        &[
            "plan",
            "-f",
            &format!("requiredlabels,{gk}"),
            "-o",
            "json",
            "--sync-vap-enforcement-scope=false",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let (_, plain, _) = vapgen(&["plan", "-f", "requiredlabels", "-o", "json"], "");
    assert_eq!(policy_of(&out), policy_of(&plain));
    assert!(!err.contains("scope sync"), "{err}");
    assert!(err.contains("ignored"), "{err}");

    // A webhook configuration of another name is not Gatekeeper's: the default rule, and
    // the summary says none was found.
    std::fs::write(dir.join("other.yaml"), scope_objects("someone-else")).expect("write");
    let other = dir.join("other.yaml");
    let (code, out, err) = vapgen(
        &[
            "plan",
            "-f",
            &format!("requiredlabels,{}", other.display()),
            "-o",
            "json",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let vap = policy_of(&out);
    assert_eq!(
        vap["spec"]["matchConstraints"],
        policy_of(&plain)["spec"]["matchConstraints"]
    );
    assert!(err.contains("no ValidatingWebhookConfiguration gatekeeper-validating-webhook-configuration in the input: the default match rule"), "{err}");
    // … unless it is named so.
    let (code, out, err) = vapgen(
        &[
            "plan",
            "-f",
            &format!("requiredlabels,{}", other.display()),
            "-o",
            "json",
            "--validating-webhook-configuration-name=someone-else",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        policy_of(&out)["spec"]["matchConstraints"]["matchPolicy"],
        "Exact"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Without Gatekeeper's objects or exempt namespaces, scope sync changes nothing: the output
/// and the summary are those of `--sync-vap-enforcement-scope=false` (the controller, too,
/// makes the default match rule while the webhook configuration is absent).
#[test]
fn plan_without_scope_inputs_is_unchanged() {
    let (code, on, err_on) = vapgen(&["plan", "-f", "requiredlabels"], "");
    assert_eq!(code, 0, "{err_on}");
    let (code, off, err_off) = vapgen(
        &[
            "plan",
            "-f",
            "requiredlabels",
            "--sync-vap-enforcement-scope=false",
        ],
        "",
    );
    assert_eq!(code, 0, "{err_off}");
    assert_eq!(on, off);
    assert_eq!(err_on, err_off);
    assert!(!err_on.contains("scope sync"), "{err_on}");
}
