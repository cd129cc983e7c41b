"""Stage 3, images: the queue of batches, the batches in flight, one batch's engine call (with
stops at step boundaries), and engine/ (the diffusers engine, its model cache, the fake)."""
