package node_test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type listedPkg struct {
	ImportPath string
	Dir        string
	Imports    []string
	Deps       []string
	GoFiles    []string
}

const module = "github.com/cofferhq/coffer"

// goList runs `go list -json -deps=false` over the whole module from its root.
func goList(t *testing.T, args ...string) []listedPkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = ".."
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Skipf("go tool not available: %v", err)
	}
	var pkgs []listedPkg
	dec := json.NewDecoder(out)
	for {
		var p listedPkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// TestAgentStaysThin fails if the agent library or the coffer binary links Raft or
// memberlist: agents must stay thin and never carry cluster-internal machinery.
func TestAgentStaysThin(t *testing.T) {
	forbidden := []string{"github.com/hashicorp/raft", "github.com/hashicorp/memberlist", "github.com/cockroachdb/pebble"}
	pkgs := goList(t, "./client/...", "./cmd/coffer")
	if len(pkgs) == 0 {
		t.Fatal("go list found no client packages")
	}
	for _, p := range pkgs {
		for _, d := range p.Deps {
			for _, f := range forbidden {
				if strings.HasPrefix(d, f) {
					t.Errorf("%s depends on %s", p.ImportPath, d)
				}
			}
		}
	}
}

// TestOnlyCmdImportsNode enforces the composition-root rule: node is imported only by
// cmd/* and node/nodetest.
func TestOnlyCmdImportsNode(t *testing.T) {
	for _, p := range goList(t, "./...") {
		for _, imp := range p.Imports {
			if imp != module+"/node" {
				continue
			}
			if !strings.HasPrefix(p.ImportPath, module+"/cmd/") && p.ImportPath != module+"/node/nodetest" {
				t.Errorf("%s imports node", p.ImportPath)
			}
		}
	}
}

// deterministic packages must not read the wall clock or global randomness.
var deterministic = []string{"placement", "meta/fsm", "meta/command", "meta/anomaly", "client/chunker", "client/tree", "chunkstore/erasure"}

// TestSourceRules checks every non-test Go file: package documentation exists; no
// package-level mutable state (a package-level var must be a sentinel error (Err*/err*),
// a compile-time assertion (_), or carry a comment saying why it is immutable); and
// deterministic packages never call time.Now or math/rand.
func TestSourceRules(t *testing.T) {
	fset := token.NewFileSet()
	for _, p := range goList(t, "./...") {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		hasDoc := false
		isDet := false
		for _, d := range deterministic {
			if rel == d {
				isDet = true
			}
		}
		for _, name := range p.GoFiles {
			path := filepath.Join(p.Dir, name)
			f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
				hasDoc = true
			}
			for _, decl := range f.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok || gd.Tok != token.VAR {
					continue
				}
				for _, spec := range gd.Specs {
					vs := spec.(*ast.ValueSpec)
					doc := gd.Doc.Text() + vs.Doc.Text() + vs.Comment.Text()
					for _, n := range vs.Names {
						ok := n.Name == "_" || strings.HasPrefix(n.Name, "Err") || strings.HasPrefix(n.Name, "err") ||
							strings.Contains(strings.ToLower(doc), "immutable")
						if !ok {
							t.Errorf("%s: package-level var %s (mutable state; make it a const, a field, or document why it is immutable)",
								fset.Position(n.Pos()), n.Name)
						}
					}
				}
			}
			if isDet {
				ast.Inspect(f, func(n ast.Node) bool {
					if sel, ok := n.(*ast.SelectorExpr); ok {
						if id, ok := sel.X.(*ast.Ident); ok && id.Name == "time" && sel.Sel.Name == "Now" {
							t.Errorf("%s: time.Now in deterministic package %s", fset.Position(sel.Pos()), rel)
						}
					}
					return true
				})
				for _, imp := range f.Imports {
					if strings.Contains(imp.Path.Value, "math/rand") {
						t.Errorf("%s: %s imports %s", path, rel, imp.Path.Value)
					}
				}
			}
		}
		if !hasDoc && len(p.GoFiles) > 0 {
			t.Errorf("package %s has no package documentation", p.ImportPath)
		}
	}
}

// importRule forbids packages in from (module-relative subtrees) to import, directly or
// through other Coffer packages, anything in forbid (module-relative subtrees, or
// third-party import path prefixes), except the subtrees in allow.
type importRule struct {
	from   []string
	forbid []string
	allow  []string
}

// TestImportRules enforces the package structure (issue 12): meta and chunkstore meet
// only through node and share only leaf vocabulary packages; the agent stays thin;
// placement and the leaves stay pure; transport knows nothing of the services it carries.
// A violation names the importing package, the forbidden import and the chain that
// reaches it.
func TestImportRules(t *testing.T) {
	// Leaves are vocabulary packages both sides may import; each imports nothing of
	// Coffer's but other leaves (the last rule checks that).
	leaves := []string{
		"chunkstore/chunk",    // chunk IDs
		"chunkstore/gcorder",  // GC orders: phases, ops, candidates, sweep result, Check
		"chunkstore/nodestat", // shard and repair figures of node.Status
		"chunkstore/grant",    // restore grant tokens and the check of a read against one
		"chunkstore/reflist",  // the snapshot reference-list format
		"placement",
	}
	rules := []importRule{
		{from: []string{"client", "cmd/coffer"}, forbid: []string{"node", "github.com/hashicorp/raft", "github.com/hashicorp/memberlist", "github.com/cockroachdb/pebble"}},
		{from: []string{"placement"}, forbid: []string{""}, allow: leaves},
		{from: []string{"transport"}, forbid: []string{"meta", "chunkstore", "node"}},
		{from: []string{"chunkstore"}, forbid: []string{"meta"}},
		{from: []string{"meta"}, forbid: []string{"chunkstore"}, allow: leaves},
		{from: leaves, forbid: []string{""}, allow: leaves},
	}
	imports := make(map[string][]string) // module-relative path -> its non-test imports
	for _, p := range goList(t, "./...") {
		imports[rel(p.ImportPath)] = p.Imports
	}
	reported := make(map[string]bool) // a package under two rules is reported once
	for _, r := range rules {
		for pkg := range imports {
			if !within(pkg, true, r.from) {
				continue
			}
			for _, v := range violations(pkg, imports, func(imp string) bool {
				_, ours := imports[imp]
				return within(imp, ours, r.forbid) && !within(imp, ours, r.allow)
			}) {
				if !reported[v] {
					reported[v] = true
					t.Error(v)
				}
			}
		}
	}
}

// rel returns a module-relative import path ("" for the module root), or the path
// unchanged for a package outside the module.
func rel(path string) string {
	if path == module {
		return ""
	}
	return strings.TrimPrefix(path, module+"/")
}

// within reports whether path (ours: a Coffer package) lies in one of the subtrees;
// "" is every Coffer package.
func within(path string, ours bool, subtrees []string) bool {
	for _, s := range subtrees {
		if s == "" && ours {
			return true
		}
		if path == s || strings.HasPrefix(path, s+"/") {
			return true
		}
	}
	return false
}

// violations walks the Coffer packages pkg imports, directly or not, and describes every
// import bad reports.
func violations(pkg string, imports map[string][]string, bad func(string) bool) []string {
	var out []string
	via := map[string]string{pkg: ""} // package -> the package it was reached from
	queue := []string{pkg}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, full := range imports[p] {
			imp := rel(full)
			if bad(imp) {
				chain := []string{imp}
				for q := p; q != ""; q = via[q] {
					chain = append([]string{q}, chain...)
				}
				msg := fmt.Sprintf("%s imports %s", module+"/"+pkg, full)
				if p != pkg {
					msg += " (through " + strings.Join(chain, " -> ") + ")"
				}
				out = append(out, msg)
				continue
			}
			if _, seen := via[imp]; !seen && imports[imp] != nil {
				via[imp] = p
				queue = append(queue, imp)
			}
		}
	}
	return out
}

// TestPackageMap fails when docs/architecture.md's package map and the module's packages
// differ: a package missing from the map, or a mapped one that no longer exists.
func TestPackageMap(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "### Package map")
	if !ok {
		t.Fatal("docs/architecture.md has no \"### Package map\" section")
	}
	mapped := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			if len(mapped) > 0 && !strings.HasPrefix(line, "|") {
				break // the table ended
			}
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(line, "| `"), "`")
		mapped[name] = true
	}
	for _, p := range goList(t, "./...") {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if !mapped[rel] {
			t.Errorf("package %s is not in docs/architecture.md's package map", rel)
		}
		delete(mapped, rel)
	}
	for name := range mapped {
		t.Errorf("docs/architecture.md's package map lists %s, which is not a package of the module", name)
	}
}
