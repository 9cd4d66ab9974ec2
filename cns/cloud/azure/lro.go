package azure

import (
	"context"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// await drives a long-running operation to its end. PollUntilDone waits 30 s between polls
// when the service gives no Retry-After and refuses less than 1 s, so the poller is driven
// here with a short doubling delay, capped at pollMax, that honours Retry-After. The NIC PUT
// and the scale-set VM update share it.
func await[T any](ctx context.Context, poller *runtime.Poller[T], pollMax time.Duration) (T, error) {
	delay := 20 * time.Millisecond
	for !poller.Done() {
		presp, err := poller.Poll(ctx)
		if err != nil {
			var zero T
			return zero, err
		}
		if poller.Done() {
			break
		}
		wait := min(delay, pollMax)
		if ra := retryAfter(presp.Header); ra > 0 {
			wait = min(ra, pollMax)
		}
		delay *= 2
		if err := sleep(ctx, wait); err != nil {
			var zero T
			return zero, err
		}
	}
	return poller.Result(ctx)
}
