// Command loadgen is the node tier's program inside the cluster (image modeldeploy-loadgen,
// tests/node): the client that sends load through a model's Service, and the file server
// the model servers download from.
//
//	loadgen run -url URL (-body JSON | -rows FILE) [-feedback-url URL] [-rate 20]
//	            [-duration 2m] [-timeout 5s] [-listen :8080] [-linger 15m]
//	    POST the body to URL at a fixed rate for at most -duration, each request on a new
//	    connection (kube-proxy balances connections, not requests). With -rows, a file of
//	    JSON lines {"body": {...}, "label": ...}, the bodies are sent in turn; with
//	    -feedback-url too, the label of every answered row goes back with the answer's
//	    prediction token ({"token": ..., "labels": [label]}), as a client that learns the
//	    truth later would. GET /results on -listen serves every request's outcome as JSON
//	    (and feedback answers by status); POST /stop ends the sending early. When the
//	    sending ends, one summary line is printed; the results stay served for -linger,
//	    then the program exits.
//	    With -conversions "control=0.1,b=0.3" (and -seed), every 200 answer is a visit of
//	    the arm its x-model-variant header names, and converts (an order) with that arm's
//	    probability, drawn from a random stream of the arm's own seeded from -seed: a shop
//	    whose customers buy more after some model's answers. GET /metrics serves
//	    loadgen_visits_total and loadgen_orders_total by variant for Prometheus.
//	loadgen serve-files -dir DIR [-listen :8000]
//	    serve the files of DIR over HTTP, and /healthz
//	loadgen receive PATH
//	    write stdin to PATH (a temporary file renamed when complete) and print its size and
//	    sha256: how files reach a pod of this image, which has no shell
//	    (kubectl exec -i POD -- /loadgen receive PATH)
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		log.Fatal("usage: loadgen run|serve-files|receive ... (see the source for flags)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "run":
		err = run(ctx, args)
	case "serve-files":
		err = serveFiles(ctx, args)
	case "receive":
		err = receive(args)
	default:
		err = fmt.Errorf("unknown command %q (want run, serve-files or receive)", cmd)
	}
	if err != nil {
		log.Fatalf("loadgen: %v", err)
	}
}

// Outcome kinds of a request that got no HTTP answer.
const (
	// no connection was made: refused, unreachable, or the connect timed out
	errConnect = "connect"
	// the connection was made, then failed (reset, closed, timed out) before an answer
	errRequest = "request"
	// more requests in flight than the client allows; none was sent
	errOverload = "overload"
)

// maxInFlight bounds the goroutines of a run: a server that stops answering must not make
// the client pile up connections without end.
const maxInFlight = 512

type record struct {
	At      float64 `json:"at"`      // unix time the request started, seconds
	Seconds float64 `json:"seconds"` // until the answer's body was read, or the error
	Status  int     `json:"status"`  // HTTP status; 0 without an answer
	Error   string  `json:"error,omitempty"`
	Detail  string  `json:"detail,omitempty"`
	Version string  `json:"version,omitempty"` // model_version of a V2 inference answer
	Variant string  `json:"variant,omitempty"` // the answer's x-model-variant header
}

type results struct {
	URL      string         `json:"url"`
	Address  string         `json:"address"`
	Rate     float64        `json:"rate"`
	Started  float64        `json:"started"`
	Stopped  float64        `json:"stopped,omitempty"`
	Sending  bool           `json:"sending"`
	Counts   map[string]int `json:"counts"`
	Feedback map[string]int `json:"feedback"` // feedback answers by HTTP status or error
	Requests []record       `json:"requests,omitempty"`
}

// row is one request body and, when the client knows it, the true label of its one row.
type row struct {
	Body  json.RawMessage `json:"body"`
	Label json.RawMessage `json:"label,omitempty"`
}

// workload says what to send: the bodies in turn, and where labels go back.
type workload struct {
	rows        []row
	next        atomic.Uint64
	feedbackURL string
	shop        *shop
}

func (w *workload) pick() row {
	return w.rows[(w.next.Add(1)-1)%uint64(len(w.rows))]
}

func readRows(path string) ([]row, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rows []row
	for i, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var r row
		if err := json.Unmarshal([]byte(line), &r); err != nil || len(r.Body) == 0 {
			return nil, fmt.Errorf("%s line %d: want {\"body\": {...}, \"label\": ...}: %v", path, i+1, err)
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s holds no rows", path)
	}
	return rows, nil
}

type recorder struct {
	mu       sync.Mutex
	res      results
	inFlight int
}

func (r *recorder) add(rec record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Requests = append(r.res.Requests, rec)
	key := rec.Error
	if key == "" {
		key = fmt.Sprint(rec.Status)
	}
	r.res.Counts[key]++
}

func (r *recorder) snapshot(withRequests bool) results {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.res
	out.Counts = make(map[string]int, len(r.res.Counts))
	for k, v := range r.res.Counts {
		out.Counts[k] = v
	}
	out.Feedback = make(map[string]int, len(r.res.Feedback))
	for k, v := range r.res.Feedback {
		out.Feedback[k] = v
	}
	if withRequests {
		out.Requests = append([]record(nil), r.res.Requests...)
	} else {
		out.Requests = nil
	}
	return out
}

// arm is one experiment arm's simulated customers: a conversion probability, its own
// seeded random stream, and what was counted.
type arm struct {
	probability float64
	draws       *rand.Rand
	visits      int
	orders      int
}

// shop turns answers into visits and orders by the variant that answered.
type shop struct {
	mu   sync.Mutex
	arms map[string]*arm
}

func newShop(spec string, seed int64) (*shop, error) {
	s := &shop{arms: map[string]*arm{}}
	if spec == "" {
		return s, nil
	}
	for _, part := range strings.Split(spec, ",") {
		name, value, ok := strings.Cut(part, "=")
		p, err := strconv.ParseFloat(value, 64)
		if !ok || name == "" || err != nil || p < 0 || p > 1 {
			return nil, fmt.Errorf("-conversions %q: write arm=probability pairs such as control=0.1,b=0.3", spec)
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte(name))
		s.arms[name] = &arm{probability: p, draws: rand.New(rand.NewSource(seed ^ int64(h.Sum64())))}
	}
	return s, nil
}

// visit counts one answer of `variant`; an arm not configured converts never.
func (s *shop) visit(variant string) {
	if variant == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.arms[variant]
	if !ok {
		a = &arm{}
		s.arms[variant] = a
	}
	a.visits++
	if a.draws != nil && a.draws.Float64() < a.probability {
		a.orders++
	}
}

func (s *shop) metrics(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.arms))
	for name := range s.arms {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, metric := range []string{"visits", "orders"} {
		fmt.Fprintf(w, "# TYPE loadgen_%s_total counter\n", metric)
		for _, name := range names {
			value := s.arms[name].visits
			if metric == "orders" {
				value = s.arms[name].orders
			}
			fmt.Fprintf(w, "loadgen_%s_total{variant=%q} %d\n", metric, name, value)
		}
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	target := fs.String("url", "", "URL to POST to")
	body := fs.String("body", "", "request body (JSON)")
	rowsFile := fs.String("rows", "", "file of JSON lines {body, label}: bodies sent in turn")
	feedbackURL := fs.String("feedback-url", "", "POST each answered row's label here with its token")
	rate := fs.Float64("rate", 20, "requests per second")
	duration := fs.Duration("duration", 2*time.Minute, "stop sending after this long")
	timeout := fs.Duration("timeout", 5*time.Second, "limit of one request, connect included")
	listen := fs.String("listen", ":8080", "address of /results and /stop")
	linger := fs.Duration("linger", 15*time.Minute, "serve the results this long after sending stopped")
	conversions := fs.String("conversions", "", "arm=probability,...: orders per answer by x-model-variant")
	seed := fs.Int64("seed", 1, "seed of the conversion draws")
	_ = fs.Parse(args)
	if *target == "" || *rate <= 0 {
		return errors.New("run needs -url and a positive -rate")
	}
	customers, err := newShop(*conversions, *seed)
	if err != nil {
		return err
	}
	work := &workload{rows: []row{{Body: json.RawMessage(*body)}}, feedbackURL: *feedbackURL, shop: customers}
	if *rowsFile != "" {
		rows, err := readRows(*rowsFile)
		if err != nil {
			return err
		}
		work.rows = rows
	}
	parsed, err := url.Parse(*target)
	if err != nil || parsed.Host == "" {
		return fmt.Errorf("-url %q is not an absolute URL", *target)
	}
	address, err := resolve(ctx, parsed)
	if err != nil {
		return err
	}
	rec := &recorder{res: results{
		URL: *target, Address: address, Rate: *rate, Counts: map[string]int{},
		Feedback: map[string]int{}, Sending: true,
	}}
	stopSending := make(chan struct{})
	var stopOnce sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/results", func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rec.snapshot(req.URL.Query().Get("requests") != "0"))
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		customers.metrics(w)
	})
	mux.HandleFunc("/stop", func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			http.Error(w, "POST to stop", http.StatusMethodNotAllowed)
			return
		}
		stopOnce.Do(func() { close(stopSending) })
		fmt.Fprintln(w, "stopping")
	})
	server := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := server.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("loadgen: %v", err)
		}
	}()

	client := newClient(address, *timeout)
	rec.mu.Lock()
	rec.res.Started = unixSeconds(time.Now())
	rec.mu.Unlock()
	send(ctx, client, rec, *target, work, *rate, *duration, stopSending)

	rec.mu.Lock()
	rec.res.Sending = false
	rec.res.Stopped = unixSeconds(time.Now())
	rec.mu.Unlock()
	summary, _ := json.Marshal(rec.snapshot(false))
	fmt.Println(string(summary))

	select {
	case <-ctx.Done():
	case <-time.After(*linger):
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return server.Shutdown(shutdown)
}

// resolve looks the URL's host up once (retrying while cluster DNS is not answering yet):
// every request then connects to that address, so a DNS hiccup is never counted as a
// failed request. A Service's ClusterIP does not change while it exists.
func resolve(ctx context.Context, u *url.URL) (string, error) {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		addrs, err := net.DefaultResolver.LookupHost(ctx, u.Hostname())
		if err == nil && len(addrs) > 0 {
			return net.JoinHostPort(addrs[0], port), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("cannot resolve %s: %v", u.Hostname(), err)
		}
		time.Sleep(time.Second)
	}
}

func newClient(address string, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: timeout}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, address)
			},
			// a new connection per request: each one is balanced by kube-proxy on its own
			DisableKeepAlives: true,
		},
	}
}

func send(ctx context.Context, client *http.Client, rec *recorder, target string, work *workload,
	rate float64, duration time.Duration, stop <-chan struct{}) {
	ticker := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer ticker.Stop()
	end := time.After(duration)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-end:
			return
		case <-ticker.C:
		}
		rec.mu.Lock()
		full := rec.inFlight >= maxInFlight
		if !full {
			rec.inFlight++
		}
		rec.mu.Unlock()
		if full {
			rec.add(record{At: unixSeconds(time.Now()), Error: errOverload})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := work.pick()
			outcome, token := one(client, target, r.Body)
			rec.add(outcome)
			if outcome.Status == http.StatusOK {
				work.shop.visit(outcome.Variant)
			}
			if token != "" && len(r.Label) > 0 && work.feedbackURL != "" {
				rec.addFeedback(feedback(client, work.feedbackURL, token, r.Label))
			}
			rec.mu.Lock()
			rec.inFlight--
			rec.mu.Unlock()
		}()
	}
}

// one sends one request; its outcome, and the prediction token of a 200 answer if any.
func one(client *http.Client, target string, body []byte) (record, string) {
	started := time.Now()
	rec := record{At: unixSeconds(started)}
	var connected atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { connected.Store(true) }}
	req, err := http.NewRequestWithContext(
		httptrace.WithClientTrace(context.Background(), trace), http.MethodPost, target,
		strings.NewReader(string(body)))
	if err != nil {
		rec.Error, rec.Detail = errRequest, err.Error()
		return rec, ""
	}
	req.Header.Set("Content-Type", "application/json")
	token := ""
	resp, err := client.Do(req)
	if err == nil {
		var answer []byte
		answer, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		rec.Status = resp.StatusCode
		rec.Variant = resp.Header.Get("x-model-variant")
		if err == nil && resp.StatusCode == http.StatusOK {
			var v2 struct {
				ModelVersion string `json:"model_version"`
				Parameters   struct {
					Token string `json:"prediction_token"`
				} `json:"parameters"`
			}
			if json.Unmarshal(answer, &v2) == nil {
				rec.Version = v2.ModelVersion
				token = v2.Parameters.Token
			}
		}
	}
	rec.Seconds = time.Since(started).Seconds()
	if err != nil {
		rec.Error, rec.Detail = errRequest, err.Error()
		if !connected.Load() {
			rec.Error = errConnect
		}
	}
	return rec, token
}

// feedback posts one row's true label with the token of the answer that predicted it;
// the HTTP status, or the kind of error.
func feedback(client *http.Client, target, token string, label json.RawMessage) string {
	body, err := json.Marshal(map[string]any{"token": token, "labels": []json.RawMessage{label}})
	if err != nil {
		return errRequest
	}
	resp, err := client.Post(target, "application/json", strings.NewReader(string(body)))
	if err != nil {
		return errRequest
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return fmt.Sprint(resp.StatusCode)
}

func (r *recorder) addFeedback(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Feedback[key]++
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMicro()) / 1e6 }

func serveFiles(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve-files", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to serve")
	listen := fs.String("listen", ":8000", "listen address")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("serve-files needs -dir")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("/", http.FileServer(http.Dir(*dir)))
	server := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	if err := server.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func receive(args []string) error {
	if len(args) != 1 {
		return errors.New("receive takes one argument, the path to write")
	}
	path := args[0]
	tmp, err := os.CreateTemp(filepath.Dir(path), ".receive-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	digest := sha256.New()
	size, err := io.Copy(io.MultiWriter(tmp, digest), os.Stdin)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	fmt.Printf("%d %s\n", size, hex.EncodeToString(digest.Sum(nil)))
	return nil
}
