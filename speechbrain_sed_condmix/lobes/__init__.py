"""Neural network building blocks: front ends, CRNN, ATST, heads."""
