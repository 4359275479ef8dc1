package resources

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/ambitmesh/ambit/api/v1alpha1"
)

// Object is a typed Kubernetes object of one of the supported kinds.
type Object interface {
	metav1.Object
	runtime.Object
}

// Decoded is one object decoded from a source, with where it was written so
// that later problems (a duplicate) can point at both places.
type Decoded struct {
	Object
	// Source is the name given to Decode, normally a file path.
	Source string
	// Document is the 1-based position of the YAML document within Source.
	Document int
}

// Kind returns the object's kind ("HTTPRoute").
func (d Decoded) Kind() string { return d.GetObjectKind().GroupVersionKind().Kind }

// Ref names the object the way errors and status do: "HTTPRoute default/web",
// or "Namespace prod" for cluster-scoped kinds.
func (d Decoded) Ref() string { return objectRef(d.Kind(), d.GetNamespace(), d.GetName()) }

// Where names the place the object was written: "routes.yaml document 2".
func (d Decoded) Where() string { return d.Source + " document " + strconv.Itoa(d.Document) }

// DefaultNamespace is given to namespaced objects written without one, as
// kubectl does.
const DefaultNamespace = "default"

const gatewayGroup = "gateway.networking.k8s.io"

// kindInfo describes one supported kind. Older API versions are accepted when
// their schema is identical to the first (preferred) version, and objects are
// normalised to the preferred version's Go type.
type kindInfo struct {
	group    string
	kind     string
	versions []string
	cluster  bool
	newObj   func() Object
}

func (k *kindInfo) gvk() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: k.group, Version: k.versions[0], Kind: k.kind}
}

var kinds = []*kindInfo{
	{group: "", kind: "Namespace", versions: []string{"v1"}, cluster: true, newObj: func() Object { return &corev1.Namespace{} }},
	{group: "", kind: "Service", versions: []string{"v1"}, newObj: func() Object { return &corev1.Service{} }},
	{group: "", kind: "ServiceAccount", versions: []string{"v1"}, newObj: func() Object { return &corev1.ServiceAccount{} }},
	{group: "", kind: "Secret", versions: []string{"v1"}, newObj: func() Object { return &corev1.Secret{} }},
	{group: "", kind: "ConfigMap", versions: []string{"v1"}, newObj: func() Object { return &corev1.ConfigMap{} }},
	{group: v1alpha1.GroupVersion.Group, kind: "Workload", versions: []string{"v1alpha1"}, newObj: func() Object { return &v1alpha1.Workload{} }},
	{group: v1alpha1.GroupVersion.Group, kind: "AuthorizationPolicy", versions: []string{"v1alpha1"}, newObj: func() Object { return &v1alpha1.AuthorizationPolicy{} }},
	{group: v1alpha1.GroupVersion.Group, kind: "MeshConfig", versions: []string{"v1alpha1"}, cluster: true, newObj: func() Object { return &v1alpha1.MeshConfig{} }},
	{group: gatewayGroup, kind: "GatewayClass", versions: []string{"v1", "v1beta1"}, cluster: true, newObj: func() Object { return &gwv1.GatewayClass{} }},
	{group: gatewayGroup, kind: "Gateway", versions: []string{"v1", "v1beta1"}, newObj: func() Object { return &gwv1.Gateway{} }},
	{group: gatewayGroup, kind: "HTTPRoute", versions: []string{"v1", "v1beta1"}, newObj: func() Object { return &gwv1.HTTPRoute{} }},
	{group: gatewayGroup, kind: "GRPCRoute", versions: []string{"v1", "v1alpha2"}, newObj: func() Object { return &gwv1.GRPCRoute{} }},
	{group: gatewayGroup, kind: "TLSRoute", versions: []string{"v1", "v1alpha3", "v1alpha2"}, newObj: func() Object { return &gwv1.TLSRoute{} }},
	{group: gatewayGroup, kind: "TCPRoute", versions: []string{"v1", "v1alpha2"}, newObj: func() Object { return &gwv1.TCPRoute{} }},
	{group: gatewayGroup, kind: "ReferenceGrant", versions: []string{"v1", "v1beta1", "v1alpha2"}, newObj: func() Object { return &gwv1.ReferenceGrant{} }},
	{group: gatewayGroup, kind: "BackendTLSPolicy", versions: []string{"v1", "v1alpha3"}, newObj: func() Object { return &gwv1.BackendTLSPolicy{} }},
}

var kindsByGroupKind = func() map[schema.GroupKind]*kindInfo {
	m := make(map[schema.GroupKind]*kindInfo, len(kinds))
	for _, k := range kinds {
		m[schema.GroupKind{Group: k.group, Kind: k.kind}] = k
	}
	return m
}()

// supportedKinds is the list unknown-kind errors print.
var supportedKinds = func() string {
	var parts []string
	for _, k := range kinds {
		parts = append(parts, k.kind+" ("+schema.GroupVersion{Group: k.group, Version: k.versions[0]}.String()+")")
	}
	return strings.Join(parts, ", ")
}()

// Decode splits data, the contents of source (a file path or another name
// for error messages), into YAML documents and decodes each strictly into its
// typed object: duplicate keys, unknown fields and fields whose case does not
// match are errors, as the API server's strict field validation would report
// them. Empty documents are skipped and `kind: List` is expanded.
// Namespaced objects without a namespace get DefaultNamespace.
//
// A document with any error yields no object; the others are still returned,
// so one bad document does not hide the rest.
func Decode(source string, data []byte) ([]Decoded, []SourceError) {
	docs, splitErrs := SplitDocuments(source, data)
	var (
		objs []Decoded
		errs []SourceError
	)
	for _, d := range docs {
		o, e := DecodeDocument(source, d)
		objs = append(objs, o...)
		errs = append(errs, e...)
	}
	return objs, append(errs, splitErrs...)
}

// Document is one YAML document of a file as Decode splits it. Decoding it
// depends only on Data, except for the document number and line numbers in
// error messages: callers may reuse the objects decoded from equal Data
// wherever the document moved, but not the errors.
type Document struct {
	// Number is the 1-based position of the document in the file.
	Number int
	// Data are the document's lines verbatim, a leading "---" included.
	Data []byte
	// FirstLine is the file line number of Data's first line.
	FirstLine int
}

// SplitDocuments splits data, the contents of source, into YAML documents
// the way Decode does. A bad document separator ends the split: the error
// names where it went wrong and the rest of the file is not returned.
func SplitDocuments(source string, data []byte) ([]Document, []SourceError) {
	var docs []Document
	lines := splitLines(data)
	cursor := 0 // index into lines of the first line not yet consumed
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		chunk, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The reader cannot resynchronise after a bad separator, so the
			// rest of the file is lost; say where it went wrong.
			line := cursor + 1
			for line <= len(lines) && (!bytes.HasPrefix(lines[line-1], []byte("---")) || isSeparatorLine(lines[line-1])) {
				line++
			}
			return docs, []SourceError{{Source: source, Document: doc,
				Message: fmt.Sprintf("invalid YAML: line %d: %v; a document separator is \"---\", optionally followed by a comment", line, err)}}
		}
		// A chunk is a verbatim run of lines (a leading "---" included),
		// followed by the separator line that ended it.
		docs = append(docs, Document{Number: doc, Data: chunk, FirstLine: cursor + 1})
		cursor += bytes.Count(chunk, []byte{'\n'}) + 1
	}
	return docs, nil
}

// DecodeDocument decodes one document of source as Decode does: empty
// documents yield nothing and `kind: List` yields its items. A document with
// errors yields no object, except the items of a List that decoded.
func DecodeDocument(source string, d Document) ([]Decoded, []SourceError) {
	o, e := decodeDocument(d.Data, d.FirstLine)
	var objs []Decoded
	if len(o) > 0 {
		objs = make([]Decoded, len(o))
		for i := range o {
			objs[i] = Decoded{Object: o[i], Source: source, Document: d.Number}
		}
	}
	for i := range e {
		e[i].Source, e[i].Document = source, d.Number
	}
	return objs, e
}

// splitLines mirrors how the YAML reader sees lines (without "\n" or "\r\n")
// so that documents can be mapped back to line numbers in the file.
func splitLines(data []byte) [][]byte {
	lines := bytes.Split(data, []byte{'\n'})
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	for i, l := range lines {
		lines[i] = bytes.TrimSuffix(l, []byte{'\r'})
	}
	return lines
}

func isSeparatorLine(l []byte) bool {
	rest, ok := bytes.CutPrefix(l, []byte("---"))
	if !ok {
		return false
	}
	rest = bytes.TrimSpace(rest)
	return len(rest) == 0 || rest[0] == '#'
}

var yamlLineRE = regexp.MustCompile(`\bline (\d+)`)

// fileLines rewrites the document-relative "line N" of YAML errors to lines
// of the whole file, which is what an editor shows.
func fileLines(msg string, firstLine int) string {
	return yamlLineRE.ReplaceAllStringFunc(msg, func(m string) string {
		n, err := strconv.Atoi(m[len("line "):])
		if err != nil {
			return m
		}
		return "line " + strconv.Itoa(n+firstLine-1)
	})
}

// header is what every object has, read loosely so that errors can name the
// object even when its body is wrong.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// list is `kind: List`, as kubectl get -o yaml prints it.
type list struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ListMeta   `json:"metadata"`
	Items      []json.RawMessage `json:"items"`
}

func decodeDocument(doc []byte, firstLine int) ([]Object, []SourceError) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, []SourceError{{Message: "invalid YAML: " + fileLines(cleanYAMLError(err), firstLine)}}
	}
	js = bytes.TrimSpace(js)
	if bytes.Equal(js, []byte("null")) {
		return nil, nil // empty or comments only
	}
	h, err := readHeader(js)
	if err != nil {
		return nil, []SourceError{{Message: err.Error()}}
	}
	if h.Kind == "List" && (h.APIVersion == "v1" || h.APIVersion == "") {
		return decodeList(js)
	}
	o, e := decodeObject(js, h)
	if e != nil {
		return nil, e
	}
	return []Object{o}, nil
}

// readHeader reads apiVersion, kind and metadata loosely: a wrongly typed
// field elsewhere in metadata is reported by the typed decode, which can name
// the object.
func readHeader(js []byte) (header, error) {
	var h header
	if len(js) == 0 || js[0] != '{' {
		return h, errors.New("expected a Kubernetes object (a mapping with apiVersion, kind and metadata), found " + describeJSON(js))
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &h); err != nil && (h.APIVersion == "" || h.Kind == "") {
		return h, errors.New(cleanJSONError(err))
	}
	return h, nil
}

func decodeList(js []byte) ([]Object, []SourceError) {
	var l list
	strictErrs, err := kjson.UnmarshalStrict(js, &l, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err == nil && len(strictErrs) > 0 {
		err = errors.Join(strictErrs...)
	}
	if err != nil {
		return nil, []SourceError{{Object: "List", Message: cleanJSONError(err)}}
	}
	var (
		objs []Object
		errs []SourceError
	)
	for i, item := range l.Items {
		h, err := readHeader(item)
		if err != nil {
			errs = append(errs, SourceError{Object: "List", Message: fmt.Sprintf("items[%d]: %s", i, cleanJSONError(err))})
			continue
		}
		o, e := decodeObject(item, h)
		for j := range e {
			e[j].Message = fmt.Sprintf("List items[%d]: %s", i, e[j].Message)
		}
		errs = append(errs, e...)
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs, errs
}

// decodeObject decodes one object's JSON into its registered type and applies
// the defaults and checks that do not depend on other objects.
func decodeObject(js []byte, h header) (Object, []SourceError) {
	ns := h.Metadata.Namespace
	if info := kindsByGroupKind[schema.GroupKind{Group: groupOf(h.APIVersion), Kind: h.Kind}]; ns == "" && info != nil && !info.cluster {
		ns = DefaultNamespace
	}
	ref := objectRef(h.Kind, ns, h.Metadata.Name)
	fail := func(format string, args ...any) (Object, []SourceError) {
		return nil, []SourceError{{Object: ref, Message: fmt.Sprintf(format, args...)}}
	}
	switch {
	case h.APIVersion == "" && h.Kind == "":
		return fail("apiVersion and kind are required%s; supported kinds: %s", miscased(js, "apiVersion", "kind"), supportedKinds)
	case h.APIVersion == "":
		return fail("apiVersion is required%s", miscased(js, "apiVersion"))
	case h.Kind == "":
		return fail("kind is required%s; supported kinds: %s", miscased(js, "kind"), supportedKinds)
	}
	gv, err := schema.ParseGroupVersion(h.APIVersion)
	if err != nil {
		return fail("invalid apiVersion %q: %v", h.APIVersion, err)
	}
	info := kindsByGroupKind[schema.GroupKind{Group: gv.Group, Kind: h.Kind}]
	if info == nil {
		return fail("unknown kind %q in apiVersion %q; supported kinds: %s", h.Kind, h.APIVersion, supportedKinds)
	}
	if !slices.Contains(info.versions, gv.Version) {
		var valid []string
		for _, v := range info.versions {
			valid = append(valid, schema.GroupVersion{Group: info.group, Version: v}.String())
		}
		return fail("unsupported apiVersion %q for %s; use %s", h.APIVersion, h.Kind, strings.Join(valid, " or "))
	}

	obj := info.newObj()
	strictErrs, err := kjson.UnmarshalStrict(js, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return fail("%s", cleanJSONError(err))
	}
	if len(strictErrs) > 0 {
		var errs []SourceError
		for _, e := range strictErrs {
			errs = append(errs, SourceError{Object: ref, Message: cleanJSONError(e)})
		}
		return nil, errs
	}
	obj.GetObjectKind().SetGroupVersionKind(info.gvk())

	if obj.GetName() == "" {
		msg := "metadata.name is required"
		if obj.GetGenerateName() != "" {
			msg += " (metadata.generateName is not supported outside the API server)"
		}
		return fail("%s", msg)
	}
	var problems []string
	for _, p := range validation.IsDNS1123Subdomain(obj.GetName()) {
		problems = append(problems, fmt.Sprintf("metadata.name %q: %s", obj.GetName(), p))
	}
	if info.cluster {
		if ns := obj.GetNamespace(); ns != "" {
			problems = append(problems, fmt.Sprintf("%s is cluster-scoped; remove metadata.namespace %q", info.kind, ns))
		}
	} else {
		if obj.GetNamespace() == "" {
			obj.SetNamespace(DefaultNamespace)
		}
		for _, p := range validation.IsDNS1123Label(obj.GetNamespace()) {
			problems = append(problems, fmt.Sprintf("metadata.namespace %q: %s", obj.GetNamespace(), p))
		}
	}
	if len(problems) > 0 {
		var errs []SourceError
		for _, p := range problems {
			errs = append(errs, SourceError{Object: ref, Message: p})
		}
		return nil, errs
	}
	return obj, nil
}

// miscased points out keys that differ from the wanted ones only in case,
// the usual reason a required field seems missing.
func miscased(js []byte, want ...string) string {
	var m map[string]json.RawMessage
	if json.Unmarshal(js, &m) != nil {
		return ""
	}
	var found []string
	for k := range m {
		for _, w := range want {
			if k != w && strings.EqualFold(k, w) {
				found = append(found, fmt.Sprintf("%q is spelled %q", w, k))
			}
		}
	}
	if len(found) == 0 {
		return ""
	}
	slices.Sort(found)
	return " (" + strings.Join(found, ", ") + "; field names are case-sensitive)"
}

func objectRef(kind, ns, name string) string {
	if kind == "" {
		kind = "object"
	}
	if name == "" {
		name = "<unnamed>"
	}
	if ns == "" {
		return kind + " " + name
	}
	return kind + " " + ns + "/" + name
}

func groupOf(apiVersion string) string {
	if g, _, ok := strings.Cut(apiVersion, "/"); ok {
		return g
	}
	return ""
}

var typeErrorRE = regexp.MustCompile(`cannot unmarshal (\w+) into Go struct field \w*\.(\S+) of type (\S+)`)

// cleanJSONError rewrites decoder messages in terms of the YAML the user
// wrote: the field path and what was expected, without Go type names.
func cleanJSONError(err error) string {
	msg := strings.ReplaceAll(err.Error(), "json: ", "")
	return typeErrorRE.ReplaceAllStringFunc(msg, func(m string) string {
		g := typeErrorRE.FindStringSubmatch(m)
		s := fmt.Sprintf("field %q: found %s, expected %s", g[2], article(g[1]), article(g[3]))
		if g[1] == "bool" && g[3] == "string" {
			s += " (quote the value: YAML reads yes, no, on, off, y and n as booleans)"
		}
		return s
	})
}

func article(t string) string {
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"), t == "number":
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	case t == "object", strings.HasPrefix(t, "map"), strings.HasPrefix(t, "v1."), strings.HasPrefix(t, "struct"):
		return "a mapping"
	case t == "array", strings.HasPrefix(t, "[]"):
		return "a list"
	}
	return t
}

var dupKeyRE = regexp.MustCompile(`key ("(?:[^"\\]|\\.)*") already set in map`)

// cleanYAMLError keeps the YAML parser's message on one line.
func cleanYAMLError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "unmarshal errors:\n"); ok {
		var parts []string
		for _, l := range strings.Split(rest, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				parts = append(parts, l)
			}
		}
		msg = strings.Join(parts, "; ")
	}
	return dupKeyRE.ReplaceAllString(msg, "duplicate key $1")
}

func describeJSON(js []byte) string {
	switch {
	case len(js) == 0:
		return "nothing"
	case js[0] == '[':
		return "a list"
	case js[0] == '"':
		return "a string"
	default:
		return "a scalar value"
	}
}

// Build sorts decoded objects into a Resources snapshot. Objects are taken in
// order: when the same kind, namespace and name appear twice the first one
// wins and the second gets an error naming both places. Of several
// MeshConfigs the first by name wins. The result is sorted.
func Build(objs []Decoded) *Resources {
	r := &Resources{}
	type key struct {
		gk       schema.GroupKind
		ns, name string
	}
	seen := make(map[key]Decoded, len(objs))
	var meshConfigs []Decoded
	for _, d := range objs {
		k := key{d.GetObjectKind().GroupVersionKind().GroupKind(), d.GetNamespace(), d.GetName()}
		if first, dup := seen[k]; dup {
			r.Errors = append(r.Errors, DuplicateError(d, first))
			continue
		}
		seen[k] = d
		switch o := d.Object.(type) {
		case *corev1.Namespace:
			r.Namespaces = append(r.Namespaces, o)
		case *corev1.Service:
			r.Services = append(r.Services, o)
		case *corev1.ServiceAccount:
			r.ServiceAccounts = append(r.ServiceAccounts, o)
		case *corev1.Secret:
			r.Secrets = append(r.Secrets, o)
		case *corev1.ConfigMap:
			r.ConfigMaps = append(r.ConfigMaps, o)
		case *v1alpha1.Workload:
			r.Workloads = append(r.Workloads, o)
		case *v1alpha1.AuthorizationPolicy:
			r.AuthorizationPolicies = append(r.AuthorizationPolicies, o)
		case *v1alpha1.MeshConfig:
			meshConfigs = append(meshConfigs, d)
		case *gwv1.GatewayClass:
			r.GatewayClasses = append(r.GatewayClasses, o)
		case *gwv1.Gateway:
			r.Gateways = append(r.Gateways, o)
		case *gwv1.HTTPRoute:
			r.HTTPRoutes = append(r.HTTPRoutes, o)
		case *gwv1.GRPCRoute:
			r.GRPCRoutes = append(r.GRPCRoutes, o)
		case *gwv1.TLSRoute:
			r.TLSRoutes = append(r.TLSRoutes, o)
		case *gwv1.TCPRoute:
			r.TCPRoutes = append(r.TCPRoutes, o)
		case *gwv1.ReferenceGrant:
			r.ReferenceGrants = append(r.ReferenceGrants, o)
		case *gwv1.BackendTLSPolicy:
			r.BackendTLSPolicies = append(r.BackendTLSPolicies, o)
		default:
			r.Errors = append(r.Errors, SourceError{Source: d.Source, Document: d.Document, Object: d.Ref(),
				Message: fmt.Sprintf("internal error: no place for %T in Resources", d.Object)})
		}
	}
	if len(meshConfigs) > 0 {
		slices.SortStableFunc(meshConfigs, func(a, b Decoded) int { return strings.Compare(a.GetName(), b.GetName()) })
		r.MeshConfig = meshConfigs[0].Object.(*v1alpha1.MeshConfig)
		for _, d := range meshConfigs[1:] {
			r.Errors = append(r.Errors, ExtraMeshConfigError(d, meshConfigs[0]))
		}
	}
	r.Sort()
	return r
}

// DuplicateError is Build's error for d, which has the kind, namespace and
// name of first, seen before it.
func DuplicateError(d, first Decoded) SourceError {
	return SourceError{Source: d.Source, Document: d.Document, Object: d.Ref(),
		Message: fmt.Sprintf("duplicate object: already defined in %s, which is used; remove one of them", first.Where())}
}

// ExtraMeshConfigError is Build's error for the MeshConfig d, ignored in
// favour of used.
func ExtraMeshConfigError(d, used Decoded) SourceError {
	return SourceError{Source: d.Source, Document: d.Document, Object: d.Ref(),
		Message: fmt.Sprintf("only one MeshConfig is allowed; using %q from %s (first by name) and ignoring this one", used.GetName(), used.Where())}
}
