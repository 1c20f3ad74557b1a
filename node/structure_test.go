package node_test

import (
	"encoding/json"
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
var deterministic = []string{"placement", "meta/fsm", "meta/command", "client/chunker", "client/tree", "chunkstore/erasure"}

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
