package azure

import (
	"context"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// drive polls a long-running operation until it is done. PollUntilDone refuses less than
// 1 s and waits 30 s when ARM sends no Retry-After, so the poller is driven with cns's own
// policy instead; first is the answer that started the operation (its Retry-After says when
// to poll first), nil if it was not captured. The NIC PUT and the scale-set VM update share
// it. Its errors follow a write ARM accepted: callers mark them so (accepted).
func drive[T any](ctx context.Context, poller *runtime.Poller[T], poll pollPolicy, first *http.Response) error {
	var hint http.Header
	if first != nil {
		hint = first.Header
	}
	for attempt := 0; !poller.Done(); attempt++ {
		if err := sleep(ctx, poll.delay(attempt, RetryAfter(hint))); err != nil {
			return err
		}
		presp, err := poller.Poll(ctx)
		if err != nil {
			return err
		}
		hint = presp.Header
	}
	return nil
}
