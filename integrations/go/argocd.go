package integrations

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	luajson "layeh.com/gopher-json"
)

// ArgoCDSandbox runs Lua scripts in the sandbox Argo CD v3.5.1 gives resource
// customizations, as read in argoproj/argo-cd util/lua/lua.go
// (runLuaWithResourceActionParameters, ExecuteHealthLua, ExecuteResourceAction,
// ExecuteResourceActionDiscovery) and util/lua/oslib_safe.go:
//
//   - a gopher-lua state with the standard libraries opened only when OpenLibs is set,
//     which argocd-cm scripts get only with resource.customizations.useOpenLibs.<kind>;
//   - then the package, base and table libraries opened, and the "safe os" functions
//     (time and date only) registered into the table module: Argo CD's OpenSafeOs passes
//     the table library's name, so without open libraries no global `os` exists and
//     scripts reach time and date through require("os"), which a preloaded module answers;
//   - a context that cancels the script after one second;
//   - globals `obj` (the object) and `actionParams` (the action's parameters, empty here);
//   - a runtime error returned without its stack trace;
//   - the script's last value encoded to JSON by layeh.com/gopher-json, as Argo CD does.
//
// Importing Argo CD's own util/lua was measured and rejected (docs/gitops.md): its module
// graph is over a gigabyte and its pinned gitops-engine version cannot be downloaded.
type ArgoCDSandbox struct {
	OpenLibs bool
}

// ArgoCDTimeout is how long Argo CD lets a script run.
const ArgoCDTimeout = time.Second

// Health is what a health.lua returns.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// ResourceAction is one entry of what a discovery.lua returns.
type ResourceAction struct {
	Name        string `json:"name"`
	Disabled    bool   `json:"disabled"`
	DisplayName string `json:"displayName,omitempty"`
	IconClass   string `json:"iconClass,omitempty"`
}

// Argo CD's health status codes; anything else becomes Unknown.
var validHealth = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true,
	"Healthy": true, "Degraded": true, "Missing": true,
}

func (s ArgoCDSandbox) run(obj *unstructured.Unstructured, script string) (lua.LValue, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !s.OpenLibs})
	defer l.Close()
	safeOs := safeOsFunctions()
	openers := []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, func(l *lua.LState) int {
			l.Push(l.RegisterModule(lua.TabLibName, safeOs))
			return 1
		}},
	}
	for _, o := range openers {
		fn := l.NewFunction(o.open)
		if err := l.CallByParam(lua.P{Fn: fn, NRet: 0, Protect: true}, lua.LString(o.name)); err != nil {
			return nil, fmt.Errorf("opening %s: %w", o.name, err)
		}
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(l.SetFuncs(l.NewTable(), safeOs))
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), ArgoCDTimeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", toLua(l, obj.Object))
	if err := l.DoString(script); err != nil {
		// Argo CD drops the stack trace of a runtime error before users see it.
		var apiErr *lua.ApiError
		if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = ""
		}
		return nil, err
	}
	return l.Get(-1), nil
}

// safeOsFunctions are gopher-lua's own os.time and os.date, which Argo CD's safe os
// library copies; nothing else of os (exit, execute, remove, getenv, ...).
func safeOsFunctions() map[string]lua.LGFunction {
	scratch := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer scratch.Close()
	scratch.Push(scratch.NewFunction(lua.OpenOs))
	scratch.Call(0, 1)
	os := scratch.Get(-1).(*lua.LTable)
	return map[string]lua.LGFunction{
		"time": os.RawGetString("time").(*lua.LFunction).GFunction,
		"date": os.RawGetString("date").(*lua.LFunction).GFunction,
	}
}

// toLua converts an unstructured object as Argo CD's decodeValue does: JSON numbers
// kept as json.Number become strings, every other number a Lua number.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func encode(value lua.LValue) ([]byte, error) {
	if value.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", value.Type())
	}
	return luajson.Encode(value)
}

// Health runs a health.lua.
func (s ArgoCDSandbox) Health(obj *unstructured.Unstructured, script string) (Health, error) {
	value, err := s.run(obj, script)
	if err != nil {
		return Health{}, err
	}
	if value.Type() == lua.LTNil {
		return Health{}, nil
	}
	data, err := encode(value)
	if err != nil {
		return Health{}, err
	}
	var health Health
	if err := json.Unmarshal(data, &health); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && string(data) == "[]" {
			return Health{}, nil // an empty table
		}
		return Health{}, err
	}
	if !validHealth[health.Status] {
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return health, nil
}

// Action runs an action.lua that returns the changed object (Argo CD's "old-style"
// action, applied as a patch).
func (s ArgoCDSandbox) Action(obj *unstructured.Unstructured, script string) (*unstructured.Unstructured, error) {
	value, err := s.run(obj, script)
	if err != nil {
		return nil, err
	}
	data, err := encode(value)
	if err != nil {
		return nil, err
	}
	if len(data) > 0 && data[0] == '[' {
		return nil, fmt.Errorf("action returned a list of impacted resources; these scripts return the object")
	}
	changed := &unstructured.Unstructured{}
	if err := changed.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("action output is not an object: %w", err)
	}
	restoreEmptyMaps(changed.Object, obj.Object)
	return changed, nil
}

// restoreEmptyMaps undoes what Lua cannot tell apart: an empty table comes back as an
// empty list even where the object had an empty map. Argo CD's cleanReturnedObj puts the
// map back the same way before it patches.
func restoreEmptyMaps(changed, original map[string]any) {
	for key, was := range original {
		switch now := changed[key].(type) {
		case map[string]any:
			if wasMap, ok := was.(map[string]any); ok {
				restoreEmptyMaps(now, wasMap)
			}
		case []any:
			switch wasValue := was.(type) {
			case map[string]any:
				if len(now) == 0 {
					changed[key] = wasValue
				}
			case []any:
				for i := 0; i < len(now) && i < len(wasValue); i++ {
					nowItem, ok1 := now[i].(map[string]any)
					wasItem, ok2 := wasValue[i].(map[string]any)
					if ok1 && ok2 {
						restoreEmptyMaps(nowItem, wasItem)
					}
				}
			}
		}
	}
}

// Discovery runs a discovery.lua.
func (s ArgoCDSandbox) Discovery(obj *unstructured.Unstructured, script string) ([]ResourceAction, error) {
	value, err := s.run(obj, script)
	if err != nil {
		return nil, err
	}
	data, err := encode(value)
	if err != nil {
		return nil, err
	}
	if string(data) == "[]" {
		return nil, nil
	}
	var byName map[string]json.RawMessage
	if err := json.Unmarshal(data, &byName); err != nil {
		return nil, fmt.Errorf("discovery output is not a table of actions: %w", err)
	}
	actions := make([]ResourceAction, 0, len(byName))
	for name, raw := range byName {
		action := ResourceAction{Name: name}
		if string(raw) != "[]" { // an empty table: enabled, no settings
			if err := json.Unmarshal(raw, &action); err != nil {
				return nil, fmt.Errorf("action %s: %w", name, err)
			}
			action.Name = name
		}
		actions = append(actions, action)
	}
	return actions, nil
}
