// kstatus-tool: what GitOps tools make of the operator's objects, computed by the libraries
// they use, so the tests (operator/tests/gitops.rs) check the real behaviour, not our reading
// of it.
//
//	kstatus-tool status FILE          kstatus (sigs.k8s.io/cli-utils, what Flux uses) per object
//	kstatus-tool health SCRIPT FILE   the Argo CD health check SCRIPT (Lua) per object, run the
//	                                  way Argo CD runs it: gopher-lua (Lua 5.1) with the object
//	                                  as the global `obj`
//
// FILE holds one object or a List (JSON or YAML); one JSON line per object is printed:
// {"kind","name","status","message"}.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type line struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-tool:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 2 && args[0] == "status":
		objs, err := read(args[1])
		if err != nil {
			return err
		}
		for _, o := range objs {
			res, err := status.Compute(o)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", o.GetKind(), o.GetName(), err)
			}
			emit(o, res.Status.String(), res.Message)
		}
		return nil
	case len(args) == 3 && args[0] == "health":
		objs, err := read(args[2])
		if err != nil {
			return err
		}
		for _, o := range objs {
			st, msg, err := health(args[1], o)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", o.GetKind(), o.GetName(), err)
			}
			emit(o, st, msg)
		}
		return nil
	default:
		return fmt.Errorf("usage: kstatus-tool status FILE | kstatus-tool health SCRIPT FILE")
	}
}

func emit(o *unstructured.Unstructured, st, msg string) {
	b, _ := json.Marshal(line{Kind: o.GetKind(), Name: o.GetName(), Status: st, Message: msg})
	fmt.Println(string(b))
}

func read(path string) ([]*unstructured.Unstructured, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, err
	}
	// The unstructured JSON scheme, as client-go decodes: integers stay int64, which
	// kstatus's observedGeneration check needs.
	var probe struct {
		Items json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(js, &probe); err != nil {
		return nil, err
	}
	if probe.Items == nil {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, err
		}
		return []*unstructured.Unstructured{u}, nil
	}
	list := &unstructured.UnstructuredList{}
	if err := list.UnmarshalJSON(js); err != nil {
		return nil, err
	}
	out := make([]*unstructured.Unstructured, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out, nil
}

// health runs the check as Argo CD's lua VM does (util/lua/lua.go): the safe libraries only,
// `obj` decoded into Lua tables, the script's returned table read back as a HealthStatus.
func health(path string, o *unstructured.Unstructured) (string, string, error) {
	script, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, p := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(p.fn), NRet: 0, Protect: true}, lua.LString(p.name)); err != nil {
			return "", "", err
		}
	}
	l.SetGlobal("obj", decode(l, o.Object))
	if err := l.DoString(string(script)); err != nil {
		return "", "", err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	st := lua.LVAsString(ret.RawGetString("status"))
	switch st {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		return "", "", fmt.Errorf("the script returned status %q, which Argo CD rejects", st)
	}
	return st, lua.LVAsString(ret.RawGetString("message")), nil
}

func decode(l *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case map[string]interface{}:
		t := l.NewTable()
		for k, x := range v {
			t.RawSetString(k, decode(l, x))
		}
		return t
	case []interface{}:
		t := l.NewTable()
		for _, x := range v {
			t.Append(decode(l, x))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	default:
		return lua.LString(strings.TrimSpace(fmt.Sprint(v)))
	}
}
