// Package imds reads the Azure Instance Metadata Service: who this VM is (subscription,
// resource group, VM or scale-set instance) and its primary interface (MAC, addresses), so cns
// starts on any node with no per-node flags. Tokens do not come from here: the managed
// identity credential of azidentity calls IMDS's token endpoint itself.
package imds
