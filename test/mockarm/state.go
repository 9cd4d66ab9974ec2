package mockarm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
)

type stateFile struct {
	Subnet   string                  `json:"subnet"`
	NICs     []*armnetwork.Interface `json:"nics"`
	TokenKey []byte                  `json:"tokenKey,omitempty"` // signs issued tokens (auth.go)
}

// load reads the state file, if any, and rebuilds the subnet allocator from the NICs.
func (s *Server) load() error {
	if s.cfg.StatePath == "" {
		return nil
	}
	b, err := os.ReadFile(s.cfg.StatePath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("parse state %s: %w", s.cfg.StatePath, err)
	}
	if st.Subnet != s.cfg.Subnet.String() {
		return fmt.Errorf("state %s is for subnet %s, not %s", s.cfg.StatePath, st.Subnet, s.cfg.Subnet)
	}
	for _, n := range st.NICs {
		if n.ID == nil || n.Properties == nil {
			continue
		}
		// An operation cut short by a restart is taken as finished.
		n.Properties.ProvisioningState = ptr(armnetwork.ProvisioningStateSucceeded)
		s.nics[strings.ToLower(*n.ID)] = n
		for name, a := range nicAddrs(n) {
			s.subnet.used[a] = *n.ID + "/ipConfigurations/" + name
		}
	}
	s.tokenKey = st.TokenKey
	s.cfg.Log.Info("loaded state", "path", s.cfg.StatePath, "nics", len(st.NICs))
	return nil
}

// save writes the state file atomically. Called with s.mu held.
func (s *Server) save() {
	if s.cfg.StatePath == "" {
		return
	}
	st := stateFile{Subnet: s.cfg.Subnet.String(), TokenKey: s.tokenKey}
	for _, n := range s.nics {
		st.NICs = append(st.NICs, n)
	}
	b, err := json.Marshal(st)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(s.cfg.StatePath), 0o755)
	}
	if err == nil {
		tmp := s.cfg.StatePath + ".tmp"
		if err = os.WriteFile(tmp, b, 0o644); err == nil {
			err = os.Rename(tmp, s.cfg.StatePath)
		}
	}
	if err != nil {
		s.cfg.Log.Error("save state", "err", err)
	}
}
