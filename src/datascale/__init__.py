"""datascale: data-scaling experiments (data, model, training, orchestration)."""
