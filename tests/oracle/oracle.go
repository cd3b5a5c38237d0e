// Command oracle is vapgen's fidelity oracle: it runs Gatekeeper v3.23.1's own code over
// ConstraintTemplates and constraints and prints what Gatekeeper decides and generates, so
// that tests/tests/fidelity.rs can compare vapgen with it case by case.
//
// Input (stdin): JSON lines, one case per line:
//
//	{"id": "...", "settings": {"vapForTemplates": true, "vapbForConstraints": true,
//	 "failurePolicy": "Fail"}, "template": {...}, "constraints": [{...}, ...], "crd": false,
//	 "scope": {"webhookConfiguration": {...}, "config": {...},
//	           "exempt": {"names": [...], "prefixes": [...], "suffixes": [...]}}}
//
// "scope" (optional) turns scope sync on (Gatekeeper's --sync-vap-enforcement-scope): the
// VAP is made by transform.TemplateToPolicyDefinitionWithWebhookConfig with what Gatekeeper's
// controllers take from Gatekeeper's ValidatingWebhookConfiguration (absent: not found, the
// default match rule), its Config (absent: no exclusions) and the exempt-namespace flags.
//
// Output (stdout): one JSON line per case, in input order:
//
//	{"id": "...", "template": {"stage": S, "error": "...", "vap": {...}},
//	 "constraints": [{"name": "...", "stage": C, "error": "...", "intends": bool,
//	                  "actions": [...], "binding": {...}}],
//	 "crdSchema": {...}}   (with "crd": true: the constraint CRD's v1 openAPIV3Schema)
//
// S, in Gatekeeper's order (first failure wins):
//   - "refused": what Gatekeeper's validating webhook refuses at admission (pkg/webhook/policy.go,
//     validateTemplate): the template does not decode, `*` next to other operations, or the
//     frameworks client's CreateCRD fails (metadata, target handler, CRD validation);
//   - "ingestError": the client's AddTemplate fails (the CEL or Rego driver refuses the code);
//   - "error" / "notApplicable" / "skip" / "generate": constraint.ShouldGenerateVAP (its
//     ErrCELEngineMissing is "notApplicable");
//   - "transformError" / "generated": transform.TemplateToPolicyDefinition (scope sync off) or
//     transform.TemplateToPolicyDefinitionWithWebhookConfig (on); an ErrOperationMismatch
//     with a VAP is "generated", as the template controller goes on with it.
//
// C: "noCRD" (the template was refused: no constraint CRD exists), "refused" (the webhook's
// validateConstraint: the client's ValidateConstraint, i.e. the CRD schema, the name and the
// match validation, then util.ValidateEnforcementAction), "error" (the constraint controller:
// util.GetEnforcementAction, shouldGenerateVAPB, transform.ConstraintToBinding), "none"
// (no intent, or the template does not generate: rows B3–B5 give no binding), "bound".
//
// Called as Gatekeeper's exported code: the frameworks client (constraintclient.NewClient with
// Gatekeeper's K8sValidationTarget, the k8scel driver and the Rego driver, in main.go's order),
// CreateCRD, AddTemplate, ValidateConstraint, constraint.ShouldGenerateVAP,
// transform.TemplateToPolicyDefinition, transform.TemplateToPolicyDefinitionWithWebhookConfig,
// process.New / Excluder.Add / GetExcludedNamespaces (the Config's exclusions for the
// webhook process), transform.ConstraintToBinding, util.GetEnforcementAction,
// util.ValidateEnforcementAction, util.ScopedActionForEP, controllerutil.SetControllerReference;
// Gatekeeper's own flags (set with flag.Set per case).
//
// Re-stated here because they are unexported (each marked "re-stated" below):
//   - shouldGenerateVAPB (pkg/controller/constraint/constraint_controller.go);
//   - the v1beta1 → v1 converters of the VAP and the binding (v1beta1ToV1 in the template and
//     constraint controllers, written by hand upstream because of kubernetes/kubernetes#126582);
//   - the order of the steps of the template and constraint reconcilers and of the webhook
//     (validateTemplate, validateConstraint), and the `*`-operations check of validateTemplate;
//   - with scope sync: the webhookconfig controller's pick of the `validation.gatekeeper.sh`
//     webhook into a WebhookMatchingConfig, the template controller's handling of
//     ErrOperationMismatch (transformTemplateToVAP, manageVAP), and
//     webhook.GetAllExemptedNamespacesWithWildcard (exported, but over package flags that can
//     only grow, so it cannot be set per case: names, `prefix*`, `*suffix`, sorted).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"

	"github.com/open-policy-agent/frameworks/constraint/pkg/apis"
	templatesv1beta1 "github.com/open-policy-agent/frameworks/constraint/pkg/apis/templates/v1beta1"
	constraintclient "github.com/open-policy-agent/frameworks/constraint/pkg/client"
	"github.com/open-policy-agent/frameworks/constraint/pkg/client/drivers/rego"
	"github.com/open-policy-agent/frameworks/constraint/pkg/core/templates"
	configv1alpha1 "github.com/open-policy-agent/gatekeeper/v3/apis/config/v1alpha1"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/controller/config/process"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/controller/constraint"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/controller/webhookconfig/webhookconfigcache"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/drivers/k8scel"
	celSchema "github.com/open-policy-agent/gatekeeper/v3/pkg/drivers/k8scel/schema"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/drivers/k8scel/transform"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/target"
	"github.com/open-policy-agent/gatekeeper/v3/pkg/util"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	admissionregistrationv1beta1 "k8s.io/api/admissionregistration/v1beta1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

type settings struct {
	VAPForTemplates    bool   `json:"vapForTemplates"`
	VAPBForConstraints bool   `json:"vapbForConstraints"`
	FailurePolicy      string `json:"failurePolicy"`
}

type input struct {
	ID          string            `json:"id"`
	Settings    settings          `json:"settings"`
	Template    json.RawMessage   `json:"template"`
	Constraints []json.RawMessage `json:"constraints"`
	CRD         bool              `json:"crd"`
	Scope       *scopeInput       `json:"scope,omitempty"`
}

// scopeInput: scope sync's inputs (see the package doc).
type scopeInput struct {
	WebhookConfiguration *admissionregistrationv1.ValidatingWebhookConfiguration `json:"webhookConfiguration,omitempty"`
	Config               *configv1alpha1.Config                                  `json:"config,omitempty"`
	Exempt               struct {
		Names    []string `json:"names"`
		Prefixes []string `json:"prefixes"`
		Suffixes []string `json:"suffixes"`
	} `json:"exempt"`
}

// webhookMatchingConfig is re-stated from the webhookconfig controller's Reconcile: the
// `validation.gatekeeper.sh` webhook's matching fields; nil without it.
func (s *scopeInput) webhookMatchingConfig() *webhookconfigcache.WebhookMatchingConfig {
	if s.WebhookConfiguration == nil {
		return nil
	}
	for i := range s.WebhookConfiguration.Webhooks {
		w := &s.WebhookConfiguration.Webhooks[i]
		if w.Name == "validation.gatekeeper.sh" {
			return &webhookconfigcache.WebhookMatchingConfig{
				NamespaceSelector: w.NamespaceSelector,
				ObjectSelector:    w.ObjectSelector,
				Rules:             w.Rules,
				MatchPolicy:       w.MatchPolicy,
				MatchConditions:   w.MatchConditions,
			}
		}
	}
	return nil
}

// excluded: the Config's exclusions for the webhook process, through Gatekeeper's excluder.
func (s *scopeInput) excluded() []string {
	if s.Config == nil {
		return nil
	}
	ex := process.New()
	ex.Add(s.Config.Spec.Match)
	return ex.GetExcludedNamespaces(process.Webhook)
}

// exempted is re-stated from webhook.GetAllExemptedNamespacesWithWildcard (its inputs are
// sets: duplicates go).
func (s *scopeInput) exempted() []string {
	set := map[string]bool{}
	for _, n := range s.Exempt.Names {
		set[n] = true
	}
	for _, p := range s.Exempt.Prefixes {
		set[p+"*"] = true
	}
	for _, x := range s.Exempt.Suffixes {
		set["*"+x] = true
	}
	var out []string
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

type templateOut struct {
	Stage string `json:"stage"`
	Error string `json:"error,omitempty"`
	VAP   any    `json:"vap,omitempty"`
}

type constraintOut struct {
	Name    string   `json:"name"`
	Stage   string   `json:"stage"`
	Error   string   `json:"error,omitempty"`
	Intends bool     `json:"intends"`
	Actions []string `json:"actions"`
	Binding any      `json:"binding,omitempty"`
}

type output struct {
	ID          string          `json:"id"`
	Template    templateOut     `json:"template"`
	Constraints []constraintOut `json:"constraints"`
	CRDSchema   any             `json:"crdSchema,omitempty"`
}

type oracle struct {
	scheme  *runtime.Scheme
	decoder runtime.Decoder
	client  *constraintclient.Client
}

func newOracle() (*oracle, error) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{apis.AddToScheme, apiextensions.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	celDriver, err := k8scel.New()
	if err != nil {
		return nil, err
	}
	regoDriver, err := rego.New()
	if err != nil {
		return nil, err
	}
	client, err := constraintclient.NewClient(
		constraintclient.Targets(&target.K8sValidationTarget{}),
		constraintclient.Driver(celDriver),
		constraintclient.Driver(regoDriver),
		constraintclient.EnforcementPoints(util.AuditEnforcementPoint, util.WebhookEnforcementPoint),
	)
	if err != nil {
		return nil, err
	}
	return &oracle{
		scheme:  scheme,
		decoder: serializer.NewCodecFactory(scheme).UniversalDeserializer(),
		client:  client,
	}, nil
}

func setFlags(s settings) error {
	fp := s.FailurePolicy
	if fp == "" {
		fp = "Fail"
	}
	for name, value := range map[string]string{
		"default-create-vap-for-templates":             strconv.FormatBool(s.VAPForTemplates),
		"default-create-vap-binding-for-constraints":   strconv.FormatBool(s.VAPBForConstraints),
		"default-k8s-native-validation-failure-policy": fp,
	} {
		if err := flag.Set(name, value); err != nil {
			return fmt.Errorf("flag --%s=%s: %w", name, value, err)
		}
	}
	return nil
}

func (o *oracle) run(ctx context.Context, in *input) (out output) {
	out.ID = in.ID
	out.Constraints = []constraintOut{}
	if err := setFlags(in.Settings); err != nil {
		out.Template = templateOut{Stage: "oracleError", Error: err.Error()}
		return out
	}
	// The webhook's validateTemplate (re-stated order): decode, convert, the `*` check, CreateCRD.
	obj, _, err := o.decoder.Decode(in.Template, nil, nil)
	if err != nil {
		out.Template = templateOut{Stage: "refused", Error: err.Error()}
		return o.noCRD(in, out)
	}
	o.scheme.Default(obj)
	ct := &templates.ConstraintTemplate{}
	if err := o.scheme.Convert(obj, ct, nil); err != nil {
		out.Template = templateOut{Stage: "refused", Error: err.Error()}
		return o.noCRD(in, out)
	}
	for _, t := range ct.Spec.Targets {
		for _, op := range t.Operations {
			if string(op) == "*" && len(t.Operations) > 1 {
				out.Template = templateOut{Stage: "refused", Error: "if '*' is present, must not specify other operations"}
				return o.noCRD(in, out)
			}
		}
	}
	crd, err := o.client.CreateCRD(ctx, ct)
	if err != nil {
		out.Template = templateOut{Stage: "refused", Error: err.Error()}
		return o.noCRD(in, out)
	}
	if in.CRD {
		// As the API server serves it: apiextensions.k8s.io/v1.
		v1 := &apiextensionsv1.JSONSchemaProps{}
		if err := o.scheme.Convert(crd.Spec.Validation.OpenAPIV3Schema, v1, nil); err != nil {
			out.CRDSchema = map[string]any{"oracleError": err.Error()}
		} else {
			out.CRDSchema = clean(v1)
		}
	}
	// The template reconciler (re-stated order): AddTemplate, ShouldGenerateVAP, manageVAP.
	if _, err := o.client.AddTemplate(ctx, ct); err != nil {
		out.Template = templateOut{Stage: "ingestError", Error: err.Error()}
		// The constraint CRD exists, but the webhook cannot validate constraints of a kind the
		// client does not know: constraints are refused.
		for _, raw := range in.Constraints {
			out.Constraints = append(out.Constraints, constraintOut{Name: nameOf(raw), Stage: "refused", Error: err.Error(), Actions: []string{}})
		}
		return out
	}
	defer func() { _, _ = o.client.RemoveTemplate(ctx, ct) }()
	generate, decisionErr := constraint.ShouldGenerateVAP(ct)
	switch {
	case errors.Is(decisionErr, celSchema.ErrCELEngineMissing):
		out.Template = templateOut{Stage: "notApplicable", Error: decisionErr.Error()}
	case decisionErr != nil:
		out.Template = templateOut{Stage: "error", Error: decisionErr.Error()}
	case !generate:
		out.Template = templateOut{Stage: "skip"}
	default:
		out.Template = o.transformTemplate(ct, in.Scope)
	}
	for _, raw := range in.Constraints {
		out.Constraints = append(out.Constraints, o.constraint(raw, decisionErr == nil && generate))
	}
	return out
}

func (o *oracle) noCRD(in *input, out output) output {
	for _, raw := range in.Constraints {
		out.Constraints = append(out.Constraints, constraintOut{Name: nameOf(raw), Stage: "noCRD", Actions: []string{}})
	}
	return out
}

func nameOf(raw json.RawMessage) string {
	var m struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(raw, &m)
	return m.Metadata.Name
}

func (o *oracle) transformTemplate(ct *templates.ConstraintTemplate, scope *scopeInput) templateOut {
	var vapBeta *admissionregistrationv1beta1.ValidatingAdmissionPolicy
	var err error
	if scope == nil {
		vapBeta, err = transform.TemplateToPolicyDefinition(ct)
	} else {
		vapBeta, err = transform.TemplateToPolicyDefinitionWithWebhookConfig(ct, scope.webhookMatchingConfig(), scope.excluded(), scope.exempted())
		// The template controller goes on with the VAP on an operations mismatch (re-stated).
		if err != nil && vapBeta != nil && errors.Is(err, transform.ErrOperationMismatch) {
			err = nil
		}
	}
	if err != nil {
		return templateOut{Stage: "transformError", Error: err.Error()}
	}
	vap, err := vapToV1(vapBeta)
	if err != nil {
		return templateOut{Stage: "transformError", Error: err.Error()}
	}
	// Owner: the template as the controller reads it (v1beta1).
	owner := &templatesv1beta1.ConstraintTemplate{}
	if err := o.scheme.Convert(ct, owner, nil); err != nil {
		return templateOut{Stage: "transformError", Error: "oracle: " + err.Error()}
	}
	{
		owner.SetGroupVersionKind(templatesv1beta1.SchemeGroupVersion.WithKind("ConstraintTemplate"))
		if owner.GetUID() != "" {
			if err := controllerutil.SetControllerReference(owner, vap, o.scheme); err != nil {
				return templateOut{Stage: "transformError", Error: err.Error()}
			}
		}
	}
	vap.APIVersion = "admissionregistration.k8s.io/v1"
	vap.Kind = "ValidatingAdmissionPolicy"
	return templateOut{Stage: "generated", VAP: clean(vap)}
}

func (o *oracle) constraint(raw json.RawMessage, templateGenerates bool) constraintOut {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return constraintOut{Name: nameOf(raw), Stage: "refused", Error: err.Error(), Actions: []string{}}
	}
	out := constraintOut{Name: u.GetName(), Actions: []string{}}
	// The webhook's validateConstraint (re-stated order).
	if err := o.client.ValidateConstraint(u); err != nil {
		out.Stage, out.Error = "refused", err.Error()
		return out
	}
	ea, found, err := unstructured.NestedString(u.Object, "spec", "enforcementAction")
	if err != nil {
		out.Stage, out.Error = "refused", err.Error()
		return out
	}
	if found && ea != "" {
		if err := util.ValidateEnforcementAction(util.EnforcementAction(ea), u.Object); err != nil {
			out.Stage, out.Error = "refused", err.Error()
			return out
		}
	}
	// The constraint reconciler.
	action, err := util.GetEnforcementAction(u.Object)
	if err != nil {
		out.Stage, out.Error = "error", err.Error()
		return out
	}
	intends, actions, err := shouldGenerateVAPB(constraint.GetDefaultGenerateVAPB(), action, u)
	out.Intends = intends
	if actions != nil {
		out.Actions = actions
	}
	if err != nil {
		out.Stage, out.Error = "error", err.Error()
		return out
	}
	if !intends || !templateGenerates {
		out.Stage = "none"
		return out
	}
	bindingBeta, err := transform.ConstraintToBinding(u, actions)
	if err != nil {
		out.Stage, out.Error = "error", err.Error()
		return out
	}
	binding, err := bindingToV1(bindingBeta)
	if err != nil {
		out.Stage, out.Error = "error", err.Error()
		return out
	}
	owner := u.DeepCopy()
	owner.SetAPIVersion("constraints.gatekeeper.sh/v1beta1")
	if owner.GetUID() != "" {
		if err := controllerutil.SetControllerReference(owner, binding, o.scheme); err != nil {
			out.Stage, out.Error = "error", err.Error()
			return out
		}
	}
	binding.APIVersion = "admissionregistration.k8s.io/v1"
	binding.Kind = "ValidatingAdmissionPolicyBinding"
	out.Stage, out.Binding = "bound", clean(binding)
	return out
}

// shouldGenerateVAPB is re-stated from pkg/controller/constraint (unexported there).
func shouldGenerateVAPB(defaultGenerateVAPB bool, enforcementAction util.EnforcementAction, instance *unstructured.Unstructured) (bool, []string, error) {
	var actions []string
	var err error
	switch enforcementAction {
	case util.Scoped:
		actions, err = util.ScopedActionForEP(util.VAPEnforcementPoint, instance)
	default:
		if defaultGenerateVAPB {
			actions = []string{string(enforcementAction)}
		}
	}
	return len(actions) != 0, actions, err
}

// vapToV1 is re-stated from v1beta1ToV1 in pkg/controller/constrainttemplate (unexported).
func vapToV1(in *admissionregistrationv1beta1.ValidatingAdmissionPolicy) (*admissionregistrationv1.ValidatingAdmissionPolicy, error) {
	obj := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	obj.SetName(in.GetName())
	obj.Spec.ParamKind = &admissionregistrationv1.ParamKind{APIVersion: in.Spec.ParamKind.APIVersion, Kind: in.Spec.ParamKind.Kind}
	if mc := in.Spec.MatchConstraints; mc != nil {
		out := &admissionregistrationv1.MatchResources{NamespaceSelector: mc.NamespaceSelector, ObjectSelector: mc.ObjectSelector}
		if mc.MatchPolicy != nil {
			p := admissionregistrationv1.MatchPolicyType(*mc.MatchPolicy)
			out.MatchPolicy = &p
		}
		for i := range mc.ResourceRules {
			rule := &mc.ResourceRules[i]
			ops := append(make([]admissionregistrationv1.OperationType, 0, len(rule.Operations)), rule.Operations...)
			out.ResourceRules = append(out.ResourceRules, admissionregistrationv1.NamedRuleWithOperations{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: ops,
					Rule: admissionregistrationv1.Rule{
						APIGroups: rule.APIGroups, APIVersions: rule.APIVersions, Resources: rule.Resources, Scope: rule.Scope,
					},
				},
			})
		}
		obj.Spec.MatchConstraints = out
	}
	obj.Spec.MatchConditions = []admissionregistrationv1.MatchCondition{}
	for _, c := range in.Spec.MatchConditions {
		obj.Spec.MatchConditions = append(obj.Spec.MatchConditions, admissionregistrationv1.MatchCondition{Name: c.Name, Expression: c.Expression})
	}
	obj.Spec.Validations = []admissionregistrationv1.Validation{}
	for _, v := range in.Spec.Validations {
		obj.Spec.Validations = append(obj.Spec.Validations, admissionregistrationv1.Validation{Expression: v.Expression, Message: v.Message, MessageExpression: v.MessageExpression})
	}
	var fp admissionregistrationv1.FailurePolicyType
	switch *in.Spec.FailurePolicy {
	case admissionregistrationv1beta1.Ignore:
		fp = admissionregistrationv1.Ignore
	case admissionregistrationv1beta1.Fail:
		fp = admissionregistrationv1.Fail
	default:
		return nil, fmt.Errorf("%w: unrecognized failure policy: %s", celSchema.ErrBadFailurePolicy, *in.Spec.FailurePolicy)
	}
	obj.Spec.FailurePolicy = &fp
	for _, v := range in.Spec.Variables {
		obj.Spec.Variables = append(obj.Spec.Variables, admissionregistrationv1.Variable{Name: v.Name, Expression: v.Expression})
	}
	return obj, nil
}

// bindingToV1 is re-stated from v1beta1ToV1 in pkg/controller/constraint (unexported).
func bindingToV1(in *admissionregistrationv1beta1.ValidatingAdmissionPolicyBinding) (*admissionregistrationv1.ValidatingAdmissionPolicyBinding, error) {
	obj := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	obj.SetName(in.GetName())
	obj.Spec.PolicyName = in.Spec.PolicyName
	obj.Spec.ParamRef = &admissionregistrationv1.ParamRef{
		Name:                    in.Spec.ParamRef.Name,
		ParameterNotFoundAction: ptr.To(admissionregistrationv1.AllowAction),
	}
	actions := []admissionregistrationv1.ValidationAction{}
	for _, a := range in.Spec.ValidationActions {
		switch a {
		case admissionregistrationv1beta1.Deny:
			actions = append(actions, admissionregistrationv1.Deny)
		case admissionregistrationv1beta1.Warn:
			actions = append(actions, admissionregistrationv1.Warn)
		case admissionregistrationv1beta1.Audit:
			actions = append(actions, admissionregistrationv1.Audit)
		default:
			return nil, fmt.Errorf("%w: unrecognized enforcement action %s", transform.ErrBadEnforcementAction, a)
		}
	}
	obj.Spec.ValidationActions = actions
	if mr := in.Spec.MatchResources; mr != nil {
		obj.Spec.MatchResources = &admissionregistrationv1.MatchResources{ObjectSelector: mr.ObjectSelector, NamespaceSelector: mr.NamespaceSelector}
	}
	return obj, nil
}

// clean turns an API object into plain JSON without the zero creationTimestamp and status.
func clean(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return map[string]any{"oracleError": err.Error()}
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return map[string]any{"oracleError": err.Error()}
	}
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	delete(m, "status")
	return m
}

func main() {
	flag.Parse()
	o, err := newOracle()
	if err != nil {
		fmt.Fprintln(os.Stderr, "oracle:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	r := bufio.NewReaderSize(os.Stdin, 1<<20)
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer w.Flush()
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && string(line) != "\n" {
			var in input
			var out output
			if jerr := json.Unmarshal(line, &in); jerr != nil {
				out = output{ID: in.ID, Template: templateOut{Stage: "oracleError", Error: jerr.Error()}, Constraints: []constraintOut{}}
			} else {
				out = o.run(ctx, &in)
			}
			if eerr := enc.Encode(out); eerr != nil {
				fmt.Fprintln(os.Stderr, "oracle:", eerr)
				os.Exit(2)
			}
		}
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "oracle:", err)
			os.Exit(2)
		}
	}
}
