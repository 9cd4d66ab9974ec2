package cnsv1

// ErrorDomain is the google.rpc.ErrorInfo domain cns puts on every status it returns, so a
// client can tell cns's answers from failures of the transport.
const ErrorDomain = "cns.vnet-cni"
