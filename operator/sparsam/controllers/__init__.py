"""Controllers: what one reconciliation pass does, between the Kopf handlers (thin) and the
decisions (pure). Each reads typed snapshots, calls a decision, and acts through providers and
kube/ actuators given to it, so its unit tests run on fakes."""
