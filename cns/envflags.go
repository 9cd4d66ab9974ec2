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
