"""Reading records back: decoding wire-format values by their schema id, and `bus tail`."""
