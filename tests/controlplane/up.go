package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/component-base/version"
)

// marker names the file that says a directory belongs to `up`, so it may wipe it.
const marker = ".registrar-controlplane"

// component is one control-plane process started by the supervisor.
type component struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (c *component) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// up starts etcd, kube-apiserver and kube-controller-manager on free loopback
// ports, writes DIR/kubeconfig (an admin kubeconfig) once all three are ready,
// prints one JSON line describing the cluster on stdout, and stops everything on
// SIGINT/SIGTERM, when any component exits, or (with --exit-on-stdin-close) when
// its standard input closes — which is how a test binary that exits or crashes
// takes its cluster with it.
func up(args []string) int {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	dir := fs.String("dir", "", "state directory (created; wiped at start when it was made by up)")
	cleanup := fs.Bool("cleanup", false, "remove the state directory on exit")
	stdinClose := fs.Bool("exit-on-stdin-close", false, "stop when standard input reaches EOF")
	timeout := fs.Duration("ready-timeout", 3*time.Minute, "how long to wait for the cluster to become ready")
	apiserverPort := fs.Int("apiserver-port", 0, "apiserver port on 127.0.0.1 (0 picks a free one)")
	verbosity := fs.Int("v", 0, "log verbosity of the Kubernetes components")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "up: --dir is required")
		return 2
	}
	stateDir, err := filepath.Abs(*dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "up: %v\n", err)
		return 2
	}
	if err := prepareDir(stateDir); err != nil {
		fmt.Fprintf(os.Stderr, "up: %v\n", err)
		return 1
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-signals
		fmt.Fprintf(os.Stderr, "controlplane: %v received, stopping\n", s)
		stop()
	}()
	s := &supervisor{dir: stateDir, verbosity: *verbosity, timeout: *timeout}
	err = s.start(ctx, *apiserverPort)
	if err == nil && *stdinClose {
		// Each line of standard input is a command (see supervisor.command);
		// its end stops everything.
		go func() {
			lines := bufio.NewScanner(os.Stdin)
			for lines.Scan() {
				reply := map[string]any{"command": lines.Text(), "ok": true}
				if err := s.command(ctx, strings.TrimSpace(lines.Text())); err != nil {
					reply["ok"], reply["error"] = false, err.Error()
				}
				out, _ := json.Marshal(reply)
				fmt.Println(string(out))
			}
			stop()
		}()
	}
	if err == nil {
		err = s.wait(ctx)
	}
	s.stopAll()
	code := 0
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		s.printLogTails()
		code = 1
	}
	if *cleanup {
		if rmErr := os.RemoveAll(stateDir); rmErr != nil {
			fmt.Fprintf(os.Stderr, "controlplane: removing %s: %v\n", stateDir, rmErr)
		}
	}
	return code
}

// prepareDir gives `up` an empty state directory, refusing to wipe a directory
// it did not create.
func prepareDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
			return fmt.Errorf("%s is not empty and was not created by controlplane up; refusing to wipe it", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, marker), nil, 0o600)
}

type supervisor struct {
	dir       string
	verbosity int
	timeout   time.Duration

	// Chosen at the first start and kept: a restart brings the components
	// back on the same data, ports and certificates.
	etcdPort, peerPort, apiserverPort, kcmPort int
	certs                                      pki
	server, adminKubeconfig                    string
	client                                     *http.Client

	mu         sync.Mutex
	components []*component
	stopped    []*component
}

// start prepares the cluster (ports, certificates, kubeconfigs), launches the
// components, and prints the ready line.
func (s *supervisor) start(ctx context.Context, apiserverPort int) error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	s.etcdPort, s.peerPort, s.kcmPort = ports[0], ports[1], ports[3]
	s.apiserverPort = apiserverPort
	if s.apiserverPort == 0 {
		s.apiserverPort = ports[2]
	}
	if s.certs, err = generatePKI(filepath.Join(s.dir, "pki")); err != nil {
		return fmt.Errorf("generating certificates: %w", err)
	}
	s.server = fmt.Sprintf("https://127.0.0.1:%d", s.apiserverPort)
	s.adminKubeconfig = filepath.Join(s.dir, "admin.kubeconfig")
	if err := writeKubeconfig(s.adminKubeconfig, s.server, s.certs); err != nil {
		return err
	}
	if s.client, err = httpClient(s.certs); err != nil {
		return err
	}
	if err := s.launch(ctx); err != nil {
		return err
	}

	// The node's identity, for a test that runs a kubelet (tests/node).
	kubeletKubeconfig := filepath.Join(s.dir, "kubelet.kubeconfig")
	if err := writeKubeconfigFor(kubeletKubeconfig, s.server, s.certs, "system:node:"+nodeName,
		s.certs.kubeletCert(), s.certs.kubeletKey()); err != nil {
		return err
	}
	kubeconfig := filepath.Join(s.dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig+".tmp", s.server, s.certs); err != nil {
		return err
	}
	if err := os.Rename(kubeconfig+".tmp", kubeconfig); err != nil {
		return err
	}
	ready, err := json.Marshal(map[string]any{
		"ready":              true,
		"kubeconfig":         kubeconfig,
		"kubelet_kubeconfig": kubeletKubeconfig,
		"ca":                 s.certs.caCert(),
		"server":             s.server,
		"dir":                s.dir,
		"pid":                os.Getpid(),
	})
	if err != nil {
		return err
	}
	fmt.Println(string(ready))
	fmt.Fprintf(os.Stderr, "controlplane: ready at %s (KUBECONFIG=%s)\n", s.server, kubeconfig)
	return nil
}

// command runs one command of standard input, for tests that disturb the
// cluster: "restart" (stop etcd, kube-apiserver and kube-controller-manager
// and start them again on the same data, ports and certificates), "stop" and
// "start" (the same in two steps), "freeze" and "thaw" (SIGSTOP and SIGCONT
// to the three). It returns once the command is done (after a start, once
// all three are ready again).
func (s *supervisor) command(ctx context.Context, command string) error {
	switch command {
	case "restart":
		s.stopAll()
		return s.launch(ctx)
	case "stop":
		s.stopAll()
		return nil
	case "start":
		return s.launch(ctx)
	case "freeze", "thaw":
		sig := map[string]syscall.Signal{"freeze": syscall.SIGSTOP, "thaw": syscall.SIGCONT}[command]
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.components {
			if err := c.cmd.Process.Signal(sig); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
		}
		return nil
	default:
		return fmt.Errorf("unknown command %q (restart, stop, start, freeze, thaw)", command)
	}
}

// launch starts etcd, kube-apiserver and kube-controller-manager and waits
// until each is ready.
func (s *supervisor) launch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	s.mu.Lock()
	running := len(s.components)
	s.mu.Unlock()
	if running > 0 {
		return errors.New("the control plane is running; stop it first")
	}
	certs, server, adminKubeconfig, client := s.certs, s.server, s.adminKubeconfig, s.client
	etcdPort, peerPort, apiserverPort, kcmPort := s.etcdPort, s.peerPort, s.apiserverPort, s.kcmPort

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	etcd, err := s.spawn("etcd",
		"--data-dir", filepath.Join(s.dir, "etcd"),
		"--client-port", strconv.Itoa(etcdPort),
		"--peer-port", strconv.Itoa(peerPort))
	if err != nil {
		return err
	}
	if err := waitFor(ctx, etcd, "etcd health", func() bool {
		body, ok := get(http.DefaultClient, etcdURL+"/health")
		return ok && strings.Contains(body, `"health":"true"`)
	}); err != nil {
		return err
	}

	v := "--v=" + strconv.Itoa(s.verbosity)
	apiserverArgs := []string{v,
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiserverPort),
		"--cert-dir=" + filepath.Join(s.dir, "apiserver"),
		"--tls-cert-file=" + certs.servingCert(),
		"--tls-private-key-file=" + certs.servingKey(),
		"--client-ca-file=" + certs.caCert(),
		// The Node authorizer and NodeRestriction hold a kubelet to its own
		// node and Pods (no node runs unless a test starts one).
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + certs.saPub(),
		"--service-account-signing-key-file=" + certs.saKey(),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		"--profiling=false",
		// The advertise address is loopback, which 1.37 refuses for the
		// endpoints of the kubernetes Service; Pods on the test node are
		// told the apiserver's address directly (tests/node/config).
		"--endpoint-reconciler-type=none",
	}
	if minor, _ := strconv.Atoi(strings.TrimSuffix(version.Get().Minor, "+")); minor < 36 {
		// Before 1.36 MutatingAdmissionPolicy is beta and off. The test node's
		// own test-only policies (tests/node/config) need it; registrar and
		// the chart look for v1 only, so to them this cluster has none.
		apiserverArgs = append(apiserverArgs,
			"--feature-gates=MutatingAdmissionPolicy=true",
			"--runtime-config=admissionregistration.k8s.io/v1beta1=true")
	}
	apiserver, err := s.spawn("kube-apiserver", apiserverArgs...)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, apiserver, "kube-apiserver /readyz", func() bool {
		body, ok := get(client, server+"/readyz")
		return ok && strings.TrimSpace(body) == "ok"
	}); err != nil {
		return err
	}

	kcm, err := s.spawn("kube-controller-manager", v,
		"--kubeconfig="+adminKubeconfig,
		"--authentication-kubeconfig="+adminKubeconfig,
		"--authorization-kubeconfig="+adminKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(kcmPort),
		"--cert-dir="+filepath.Join(s.dir, "kube-controller-manager"),
		"--controllers=namespace-controller,garbage-collector-controller,serviceaccount-controller,clusterrole-aggregation-controller",
		"--leader-elect=false",
		"--root-ca-file="+certs.caCert(),
		"--service-account-private-key-file="+certs.saKey(),
		"--use-service-account-credentials=false",
		"--profiling=false",
		// Its clients' default, 20 requests a second, is a production
		// cluster's; here a hundred namespaces are deleted in five minutes,
		// each deletion a list and a delete per namespaced resource type
		// (about 120 requests), and the garbage collector deletes the Secrets
		// of thousands of apps: at 20 a second both fell minutes behind, and a
		// test waiting on either timed out.
		"--kube-api-qps=200",
		"--kube-api-burst=400",
	)
	if err != nil {
		return err
	}
	// The serviceaccount controller creates the default ServiceAccount in every
	// namespace: once it exists, the controller-manager is running its controllers.
	if err := waitFor(ctx, kcm, "kube-controller-manager (default ServiceAccount)", func() bool {
		_, ok := get(client, server+"/api/v1/namespaces/default/serviceaccounts/default")
		return ok
	}); err != nil {
		return err
	}
	return nil
}

// wait blocks until the supervisor is told to stop (nil) or a component exits
// on its own (an error).
func (s *supervisor) wait(ctx context.Context) error {
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		s.mu.Lock()
		for _, c := range s.components {
			if c.exited() {
				s.mu.Unlock()
				return fmt.Errorf("%s exited unexpectedly: %v", c.name, c.err)
			}
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

func (s *supervisor) spawn(name string, args ...string) (*component, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(s.dir, "logs", name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = s.dir
	// Own process group: a terminal's Ctrl-C reaches only the supervisor, which
	// stops the components in order. Pdeathsig: if the supervisor is killed
	// outright, the kernel kills the components too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &component{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	s.mu.Lock()
	s.components = append(s.components, c)
	s.mu.Unlock()
	return c, nil
}

// stopAll stops the components in reverse start order: SIGTERM (after
// SIGCONT, should they be frozen), then SIGKILL after a grace period. Their
// logs are kept for printLogTails.
func (s *supervisor) stopAll() {
	s.mu.Lock()
	components := s.components
	s.components = nil
	s.stopped = append(s.stopped, components...)
	s.mu.Unlock()
	for i := len(components) - 1; i >= 0; i-- {
		c := components[i]
		if c.exited() {
			continue
		}
		_ = c.cmd.Process.Signal(syscall.SIGCONT)
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
}

func (s *supervisor) printLogTails() {
	s.mu.Lock()
	components := append(append([]*component{}, s.stopped...), s.components...)
	s.mu.Unlock()
	seen := map[string]bool{}
	for _, c := range components {
		if seen[c.log] {
			continue
		}
		seen[c.log] = true
		fmt.Fprintf(os.Stderr, "---- last lines of %s ----\n", c.log)
		f, err := os.Open(c.log)
		if err != nil {
			continue
		}
		var lines []string
		scanner := bufio.NewScanner(f)
		scanner.Buffer(make([]byte, 64*1024), 1024*1024)
		for scanner.Scan() {
			lines = append(lines, scanner.Text())
			if len(lines) > 40 {
				lines = lines[1:]
			}
		}
		f.Close()
		for _, l := range lines {
			fmt.Fprintln(os.Stderr, l)
		}
	}
}

func waitFor(ctx context.Context, c *component, what string, ready func() bool) error {
	for {
		if ready() {
			return nil
		}
		if c.exited() {
			return fmt.Errorf("%s exited while waiting for %s: %v", c.name, what, c.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func get(client *http.Client, url string) (string, bool) {
	resp, err := client.Get(url)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(body), err == nil && resp.StatusCode == http.StatusOK
}

func httpClient(certs pki) (*http.Client, error) {
	caPEM, err := os.ReadFile(certs.caCert())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	admin, err := tls.LoadX509KeyPair(certs.adminCert(), certs.adminKey())
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:      pool,
			Certificates: []tls.Certificate{admin},
			MinVersion:   tls.VersionTLS12,
		}},
	}, nil
}

func writeKubeconfig(path, server string, certs pki) error {
	return writeKubeconfigFor(path, server, certs, "registrar-admin", certs.adminCert(), certs.adminKey())
}

// writeKubeconfigFor writes a kubeconfig for the client certificate at cert and key.
func writeKubeconfigFor(path, server string, certs pki, user, cert, key string) error {
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			panic(err)
		}
		return b
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["registrar-local"] = &clientcmdapi.Cluster{
		Server:                   server,
		CertificateAuthorityData: read(certs.caCert()),
	}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{
		ClientCertificateData: read(cert),
		ClientKeyData:         read(key),
	}
	cfg.Contexts["registrar-local"] = &clientcmdapi.Context{Cluster: "registrar-local", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "registrar-local"
	return clientcmd.WriteToFile(*cfg, path)
}

// freePorts reserves n distinct free loopback ports. They are released before
// the components bind them; the window is short and only loopback is involved.
func freePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
