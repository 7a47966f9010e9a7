// Command controlplane is the Kubernetes control plane registrar's tests and
// `make run` use: one binary, built from the official Kubernetes Go modules, that
// runs as any one of its components. Every component runs as its own process
// (their flag and feature-gate registries are process-global), started by the
// `up` supervisor.
//
//	controlplane up --dir DIR          etcd + kube-apiserver + kube-controller-manager
//	controlplane kubectl ARGS...       the kubectl of the same Kubernetes release
//	controlplane etcd | kube-apiserver | kube-controller-manager | kube-scheduler ARGS...
//
// kube-scheduler runs only beside a test node (tests/node/node.sh): it is
// here so it always matches the apiserver's release.
//
// The binary also dispatches on the name it is invoked by, so a symlink named
// kubectl behaves as kubectl.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func init() {
	// Pdeathsig is delivered when the thread that started a child exits; keep the
	// supervisor on one OS thread so its children are killed only when it dies.
	runtime.LockOSThread()
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "controlplane" || name == "" {
		if len(args) == 0 {
			usage()
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	// Every component parses os.Args itself (cobra, kubectl's verbosity scan).
	os.Args = append([]string{name}, args...)

	switch name {
	case "up":
		os.Exit(up(args))
	case "etcd":
		os.Exit(runEtcd(args))
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "kube-scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "kubectl":
		logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) //nolint:errcheck
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	default:
		usage()
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: controlplane up|etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubectl [flags]")
}
