// Command bench runs flypg's benchmark suites against a real local primary
// and replica (started with pgtest) and writes their figures.
//
//	go run ./integration/bench -suite tracker -out DIR
//
// Each suite writes DIR/NAME.json, a flat JSON object of metric name to
// number, and prints a markdown table of the same figures.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
)

// suite runs one benchmark and returns its figures.
type suite struct {
	about string
	run   func(ctx context.Context, o options) (results, error)
	goals func(r results) []goal
}

type options struct {
	quick bool          // fewer cycles, for smoke tests
	out   string        // the output directory, for suites that write more than NAME.json
	rtt   time.Duration // round-trip time of simulated cross-region links (peers)
	// durableDedup turns on the executor's durable deduplication (forward, faults).
	durableDedup bool
	// soakUnits is how many units the soak runs between its measurements;
	// soakAuth authenticates its clients.
	soakUnits int
	soakAuth  bool
	logf      func(format string, args ...any)
}

func suites() map[string]suite {
	return map[string]suite{
		"tracker":      {about: "replication waits: oracle vs tracker vs the original stored function", run: runTracker, goals: trackerGoals},
		"forward":      {about: "a forwarded INSERT against a direct one, on the same primary", run: runForward, goals: forwardGoals},
		"peers":        {about: "a replica-region GORM app: direct to the far primary vs dbresolver vs flypg", run: runPeers, goals: peersGoals},
		"faults":       {about: "forwarded writes under resets, latency, executor restarts and replication stalls: nothing lost, nothing doubled", run: runFaults, goals: faultsGoals},
		"soak":         {about: "a long mixed load against the executor as its own process: nothing retained per unit", run: runSoak, goals: soakGoals},
		"availability": {about: "a replica-region app under load while its replica stops, its replay stalls and the primary fails over", run: runAvailability, goals: availabilityGoals},
		"bookmarks":    {about: "the region flip: write in region A (20 ms), read at once in region B (80 ms), with and without a bookmark", run: runBookmarks, goals: bookmarksGoals},
	}
}

func main() {
	var (
		name    = flag.String("suite", "", "suite to run: "+strings.Join(sortedKeys(suites()), ", "))
		out     = flag.String("out", "bench-out", "directory for NAME.json (and a suite's charts)")
		quick   = flag.Bool("quick", false, "fewer cycles (smoke test, figures not representative)")
		cpuProf = flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
		rtt     = flag.Duration("rtt", 20*time.Millisecond, "round-trip time added to every simulated cross-region link (peers)")
		durable = flag.Bool("durable-dedup", false, "the executor records committed request IDs on the primary (forward, faults)")
		soakN   = flag.Int("soak-units", 1_000_000, "units the soak runs between its two measurements (the long variant: 10000000)")
		soakA   = flag.Bool("soak-auth", false, "soak with authenticated clients: each quiet period then lasts the replay window (2 minutes)")
	)
	flag.Parse()
	s, ok := suites()[*name]
	if !ok {
		fmt.Fprintf(os.Stderr, "bench: unknown suite %q; have: %s\n", *name, strings.Join(sortedKeys(suites()), ", "))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	o := options{quick: *quick, out: *out, rtt: *rtt, durableDedup: *durable, soakUnits: *soakN, soakAuth: *soakA, logf: func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	r, err := s.run(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %s: %v\n", *name, err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
	if err := write(*out, *name, r); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("## %s (%s)\n\n", *name, s.about)
	fmt.Print(r.table())
	failed := 0
	if s.goals != nil {
		fmt.Printf("\n| goal | measured | met |\n|---|---|---|\n")
		for _, g := range s.goals(r) {
			mark := "yes"
			if !g.met {
				mark = "**no**"
				failed++
			}
			fmt.Printf("| %s | %s | %s |\n", g.name, g.measured, mark)
		}
	}
	fmt.Printf("\nwritten %s in %s\n", filepath.Join(*out, *name+".json"), time.Since(start).Round(time.Second))
	if failed > 0 && !*quick {
		pprof.StopCPUProfile()
		os.Exit(3)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// results are a suite's figures, metric name to number.
type results map[string]float64

func (r results) table() string {
	var b strings.Builder
	b.WriteString("| metric | value |\n|---|---|\n")
	for _, k := range sortedKeys(r) {
		fmt.Fprintf(&b, "| %s | %s |\n", k, format(r[k]))
	}
	return b.String()
}

func format(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.3f", v)
}

func write(dir, name string, r results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".json"), append(b, '\n'), 0o644)
}

// goal is one target of a suite, checked against its figures.
type goal struct {
	name     string
	measured string
	met      bool
}
