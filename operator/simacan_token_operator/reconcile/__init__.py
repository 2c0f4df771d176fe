"""Pure decisions, no I/O: triggers, the pass, status and Secret rendering, consumers, Events to post."""
