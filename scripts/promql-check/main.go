// promql-check parses PromQL expressions with Prometheus's own parser, so a syntax error in an
// alert or a dashboard query fails scripts/check-manifests instead of a Prometheus reload.
//
// Input on stdin: a JSON array of {"name": ..., "expr": ...}. Prints one line per expression;
// exits 1 if any does not parse.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/prometheus/prometheus/promql/parser"
)

type query struct {
	Name string `json:"name"`
	Expr string `json:"expr"`
}

func main() {
	var queries []query
	if err := json.NewDecoder(os.Stdin).Decode(&queries); err != nil {
		fmt.Fprintf(os.Stderr, "promql-check: stdin is not a JSON array of {name, expr}: %v\n", err)
		os.Exit(2)
	}
	// Default options: the functions and syntax a stock Prometheus accepts.
	promql := parser.NewParser(parser.Options{})
	bad := 0
	for _, q := range queries {
		if _, err := promql.ParseExpr(q.Expr); err != nil {
			fmt.Printf("FAIL %s: %v\n", q.Name, err)
			bad++
		} else {
			fmt.Printf("ok   %s\n", q.Name)
		}
	}
	if bad > 0 || len(queries) == 0 {
		os.Exit(1)
	}
}
