package main

// BenchmarkTransform is Gatekeeper's side of host/benches/plan.rs: the same template (its
// TEMPLATE, K8sRequiredLabels with CEL) and the same N constraints (must-have-owner-i,
// enforcement actions deny/warn/dryrun in turn, every other one with a labelSelector
// matchLabels team=payments), through Gatekeeper v3.23.1's own code as its controllers run it
// on Gatekeeper's default flags (vapgen's Settings::default): one op is
//
//   - the template: decode (the universal deserializer, defaulting, conversion to the internal
//     version), constraint.ShouldGenerateVAP, transform.TemplateToPolicyDefinition, the v1
//     conversion (vapToV1, re-stated in oracle.go), the owner reference
//     (controllerutil.SetControllerReference; vapgen's VAP has it too) and json.Marshal;
//   - each constraint: util.GetEnforcementAction, shouldGenerateVAPB,
//     transform.ConstraintToBinding, the v1 conversion (bindingToV1) and json.Marshal (no owner
//     reference: vapgen's plan has none, the renderer adds it after the plan).
//
// The inputs are built before the timer starts, as each side's caller holds them: the template
// as JSON (vapgen's plan parses it too), the constraints decoded (Gatekeeper's constraint
// controller gets them from the informer cache as unstructured objects, vapgen's plan as
// parsed Constraint values). Run by host/benches/instructions.sh (under callgrind, with two
// fixed counts and GOGC=off) or by hand:
//
//	cd tests/oracle && GOFLAGS=-mod=readonly GOTOOLCHAIN=local go test -run '^$' -bench Transform
//
// Not part of the oracle binary (tests/oracle/build builds and hashes the non-test files only).

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/open-policy-agent/frameworks/constraint/pkg/core/templates"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/controller/constraint"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/drivers/k8scel/transform"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/util"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// benchTemplate is TEMPLATE of host/benches/plan.rs, byte for byte.
const benchTemplate = `{"apiVersion":"templates.gatekeeper.sh/v1","kind":"ConstraintTemplate","metadata":{"name":"k8srequiredlabels","uid":"u-1","generation":1},"spec":{"crd":{"spec":{"names":{"kind":"K8sRequiredLabels"}}},"targets":[{"target":"admission.k8s.gatekeeper.sh","code":[{"engine":"K8sNativeValidation","source":{"variables":[{"name":"missing","expression":"variables.params.labels.filter(k, !has(variables.anyObject.metadata.labels) || !(k in variables.anyObject.metadata.labels))"}],"validations":[{"expression":"size(variables.missing) == 0","messageExpression":"\"missing required labels: \" + variables.missing.join(\", \")"}]}}]}]}}`

// benchConstraints are constraints(n) of host/benches/plan.rs as the informer cache holds them.
func benchConstraints(n int) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, n)
	for i := range out {
		spec := map[string]any{"enforcementAction": []string{"deny", "warn", "dryrun"}[i%3]}
		if i%2 == 0 {
			spec["match"] = map[string]any{"labelSelector": map[string]any{"matchLabels": map[string]any{"team": "payments"}}}
		}
		b, err := json.Marshal(map[string]any{
			"apiVersion": "constraints.gatekeeper.sh/v1beta1",
			"kind":       "K8sRequiredLabels",
			"metadata": map[string]any{
				"name":       fmt.Sprintf("must-have-owner-%d", i),
				"uid":        fmt.Sprintf("0b0e5c1a-0000-4000-8000-%012d", i),
				"generation": 1,
			},
			"spec": spec,
		})
		if err != nil {
			panic(err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(b); err != nil {
			panic(err)
		}
		out[i] = u
	}
	return out
}

// benchPlan is one op: see BenchmarkTransform. It returns the bytes it marshalled.
func benchPlan(o *oracle, template []byte, constraints []*unstructured.Unstructured) (int, error) {
	total := 0
	obj, _, err := o.decoder.Decode(template, nil, nil)
	if err != nil {
		return 0, err
	}
	o.scheme.Default(obj)
	ct := &templates.ConstraintTemplate{}
	if err := o.scheme.Convert(obj, ct, nil); err != nil {
		return 0, err
	}
	generate, err := constraint.ShouldGenerateVAP(ct)
	if err != nil || !generate {
		return 0, fmt.Errorf("ShouldGenerateVAP: %v, %v", generate, err)
	}
	vapBeta, err := transform.TemplateToPolicyDefinition(ct)
	if err != nil {
		return 0, err
	}
	vap, err := vapToV1(vapBeta)
	if err != nil {
		return 0, err
	}
	if err := controllerutil.SetControllerReference(obj.(metav1.Object), vap, o.scheme); err != nil {
		return 0, err
	}
	vap.APIVersion = "admissionregistration.k8s.io/v1"
	vap.Kind = "ValidatingAdmissionPolicy"
	b, err := json.Marshal(vap)
	if err != nil {
		return 0, err
	}
	total += len(b)
	for _, u := range constraints {
		action, err := util.GetEnforcementAction(u.Object)
		if err != nil {
			return 0, err
		}
		intends, actions, err := shouldGenerateVAPB(constraint.GetDefaultGenerateVAPB(), action, u)
		if err != nil || !intends {
			return 0, fmt.Errorf("shouldGenerateVAPB(%s): %v, %v", u.GetName(), intends, err)
		}
		bindingBeta, err := transform.ConstraintToBinding(u, actions)
		if err != nil {
			return 0, err
		}
		binding, err := bindingToV1(bindingBeta)
		if err != nil {
			return 0, err
		}
		binding.APIVersion = "admissionregistration.k8s.io/v1"
		binding.Kind = "ValidatingAdmissionPolicyBinding"
		b, err := json.Marshal(binding)
		if err != nil {
			return 0, err
		}
		total += len(b)
	}
	return total, nil
}

var benchSink int

func BenchmarkTransform(b *testing.B) {
	if err := setFlags(settings{VAPForTemplates: true, VAPBForConstraints: true, FailurePolicy: "Fail"}); err != nil {
		b.Fatal(err)
	}
	o, err := newOracle()
	if err != nil {
		b.Fatal(err)
	}
	template := []byte(benchTemplate)
	for _, n := range []int{0, 1, 10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			// Here, not above: only the sub-benchmarks that -test.bench selects build theirs.
			constraints := benchConstraints(n)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				out, err := benchPlan(o, template, constraints)
				if err != nil {
					b.Fatal(err)
				}
				benchSink += out
			}
		})
	}
}

// TestBenchPlan checks that one op produces what vapgen's plan does for the same inputs: the
// policy and one binding per constraint, with the actions and selectors of constraints(n).
func TestBenchPlan(t *testing.T) {
	if err := setFlags(settings{VAPForTemplates: true, VAPBForConstraints: true, FailurePolicy: "Fail"}); err != nil {
		t.Fatal(err)
	}
	o, err := newOracle()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := benchPlan(o, []byte(benchTemplate), benchConstraints(4)); err != nil {
		t.Fatal(err)
	}
	for i, u := range benchConstraints(4) {
		want := []string{"[Deny]", "[Warn]", "[Audit]", "[Deny]"}[i]
		action, err := util.GetEnforcementAction(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		_, actions, err := shouldGenerateVAPB(true, action, u)
		if err != nil {
			t.Fatal(err)
		}
		bb, err := transform.ConstraintToBinding(u, actions)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprint(bb.Spec.ValidationActions)
		if got != want {
			t.Errorf("constraint %d: validationActions %s, want %s", i, got, want)
		}
		hasSelector := bb.Spec.MatchResources != nil && bb.Spec.MatchResources.ObjectSelector != nil
		if hasSelector != (i%2 == 0) {
			t.Errorf("constraint %d: objectSelector present %v, want %v", i, hasSelector, i%2 == 0)
		}
	}
}
