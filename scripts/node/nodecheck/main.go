// Command nodecheck is the small program of the image the node tests run on the local
// cluster's real node (docker.io/local/nodecheck): an HTTP server with a readiness
// endpoint, and the client side the tests exec inside pods.
//
//	nodecheck serve [-addr :8080] [-never-ready]  serve / (who answered) and /healthz
//	nodecheck get [-timeout 5s] [-ca FILE] [-bearer-file FILE] URL
//	                                              GET URL, print the body; fail on errors
//	                                              (-ca and -bearer-file: a pod's service
//	                                              account, to call the API server)
//	nodecheck lookup NAME                         resolve NAME with the pod's resolv.conf
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		log.Fatal("usage: nodecheck serve|get|lookup ... (see the source for flags)")
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "get":
		err = get(args)
	case "lookup":
		err = lookup(args)
	default:
		err = fmt.Errorf("unknown command %q (want serve, get or lookup)", cmd)
	}
	if err != nil {
		log.Fatalf("nodecheck: %v", err)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen address")
	neverReady := fs.Bool("never-ready", false, "answer /healthz with 503, so the pod never becomes ready")
	_ = fs.Parse(args)
	host, _ := os.Hostname()

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if *neverReady {
			http.Error(w, "never ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("%s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "nodecheck %s\n", host)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("nodecheck %s listening on %s", host, *addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	caFile := fs.String("ca", "", "trust only the CA certificates in this file")
	bearerFile := fs.String("bearer-file", "", "send the token in this file as a bearer token")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return errors.New("get needs exactly one URL")
	}
	client := &http.Client{Timeout: *timeout}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", *caFile)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	}
	req, err := http.NewRequest(http.MethodGet, fs.Arg(0), nil)
	if err != nil {
		return err
	}
	if *bearerFile != "" {
		token, err := os.ReadFile(*bearerFile)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s", fs.Arg(0), resp.Status)
	}
	return nil
}

func lookup(args []string) error {
	if len(args) != 1 {
		return errors.New("lookup needs exactly one name")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, args[0])
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Println(a)
	}
	return nil
}
