"""One module per stage. The registry of their names is `pipeline.registry` (it loads a stage's
module only when a recipe names it); the contract they implement is `pipeline.stages.base`."""
