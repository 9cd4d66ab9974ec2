package cns

import (
	"flag"
	"fmt"
	"strings"
)

// EnvPrefix prefixes the environment variables that set cns flags: CNS_ARM_ENDPOINT sets
// --arm-endpoint. The DaemonSet fills them from the optional ConfigMap cns-config, so a
// cluster tunes cns without editing the manifest.
const EnvPrefix = "CNS_"

// EnvName is the environment variable of flag name: CNS_ plus the name in upper case with
// dashes as underscores.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// FlagsFromEnv sets every flag of fs that the command line left unset from its environment
// variable, when lookup finds one. Command-line flags win. Call it after fs.Parse.
func FlagsFromEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		v, ok := lookup(EnvName(f.Name))
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, e)
		}
	})
	return err
}

// UnknownFlagEnv returns the names of CNS_ variables in environ that set no flag of fs: a
// misspelled ConfigMap key. They are reported, not refused: Kubernetes' service links put
// variables such as CNS_SERVICE_HOST into a pod's environment when a Service is named cns.
func UnknownFlagEnv(fs *flag.FlagSet, environ []string) []string {
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[EnvName(f.Name)] = true })
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix) && !known[name] {
			unknown = append(unknown, name)
		}
	}
	return unknown
}
