// Command cel-check compiles a generated VAP's variables and match conditions with the
// Kubernetes 1.34 VAP CEL environment (k8s.io/apiserver's own compiler, as the API server's
// validating admission policy plugin builds it) and evaluates the match conditions on
// admission scenarios, to check that vapgen's CEL is valid and has the documented semantics.
//
//	go run . ../data/example-a/expected-vap.yaml scenarios-example-a.json
//	go run . ../data/example-b/expected-vap.yaml scenarios-example-b.json
//
// Not part of `cargo test` (it needs Go and the Kubernetes modules); see README.md.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	celgo "github.com/google/cel-go/cel"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/yaml"
)

type variable struct {
	admissionregistrationv1.Variable
}

func (v *variable) GetExpression() string      { return v.Expression }
func (v *variable) ReturnTypes() []*celgo.Type { return []*celgo.Type{celgo.AnyType, celgo.DynType} }
func (v *variable) GetName() string            { return v.Name }

type scenario struct {
	Name       string          `json:"name"`
	Op         string          `json:"op"`
	Group      string          `json:"group"`
	Kind       string          `json:"kind"`
	Resource   string          `json:"resource"`
	Object     json.RawMessage `json:"object"`
	OldObject  json.RawMessage `json:"oldObject"`
	Constraint json.RawMessage `json:"constraint"`
	Want       bool            `json:"want"`
}

func obj(raw json.RawMessage) *unstructured.Unstructured {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		panic(err)
	}
	return u
}

func main() {
	var policy admissionregistrationv1.ValidatingAdmissionPolicy
	data, _ := os.ReadFile(os.Args[1])
	if err := yaml.Unmarshal(data, &policy); err != nil {
		panic(err)
	}
	var scenarios []scenario
	sdata, _ := os.ReadFile(os.Args[2])
	if err := json.Unmarshal(sdata, &scenarios); err != nil {
		panic(err)
	}
	optionalVars := cel.OptionalVariableDeclarations{HasParams: true, HasAuthorizer: true, StrictCost: true}
	envTemplate, err := cel.NewCompositionEnv(cel.VariablesTypeName, environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion(), true))
	if err != nil {
		panic(err)
	}
	compiler := cel.NewCompositedCompilerFromTemplate(envTemplate)
	vars := []cel.NamedExpressionAccessor{}
	for _, v := range policy.Spec.Variables {
		vars = append(vars, &variable{v})
	}
	for _, v := range vars {
		r := compiler.CompileAndStoreVariable(v, optionalVars, environment.StoredExpressions)
		if r.Error != nil {
			fmt.Printf("variable %s: COMPILE ERROR %v\n", v.GetName(), r.Error)
			os.Exit(1)
		}
	}
	fmt.Printf("%d variables compile\n", len(vars))
	accessors := []cel.ExpressionAccessor{}
	for i := range policy.Spec.MatchConditions {
		accessors = append(accessors, (*matchconditions.MatchCondition)(&policy.Spec.MatchConditions[i]))
	}
	fail := admissionregistrationv1.Fail
	matcher := matchconditions.NewMatcher(compiler.CompileCondition(accessors, optionalVars, environment.StoredExpressions), &fail, "policy", "validate", policy.Name)
	failed := 0
	for _, s := range scenarios {
		o, old := obj(s.Object), obj(s.OldObject)
		params := obj(s.Constraint)
		gvk := schema.GroupVersionKind{Group: s.Group, Version: "v1", Kind: s.Kind}
		gvr := schema.GroupVersionResource{Group: s.Group, Version: "v1", Resource: s.Resource}
		ns, name := "", ""
		for _, x := range []*unstructured.Unstructured{o, old} {
			if x != nil {
				ns, name = x.GetNamespace(), x.GetName()
			}
		}
		attr := admission.NewAttributesRecord(nilIfNil(o), nilIfNil(old), gvk, ns, name, gvr, "", admission.Operation(s.Op), nil, false, &user.DefaultInfo{Name: "u"})
		va := &admission.VersionedAttributes{Attributes: attr, VersionedKind: gvk, VersionedObject: nilIfNil(o), VersionedOldObject: nilIfNil(old)}
		res := matcher.Match(context.Background(), va, params, nil)
		status := "ok"
		if res.Error != nil {
			status = "ERROR " + res.Error.Error()
			failed++
		} else if res.Matches != s.Want {
			status = fmt.Sprintf("WRONG (matches=%v failed=%s)", res.Matches, res.FailedConditionName)
			failed++
		}
		fmt.Printf("%-70s %s\n", s.Name, status)
	}
	fmt.Printf("%d scenarios, %d failed\n", len(scenarios), failed)
	if failed > 0 {
		os.Exit(1)
	}
}

func nilIfNil(u *unstructured.Unstructured) runtime.Object {
	if u == nil {
		return nil
	}
	return u
}
