"""layerwise.train: train any spec on local data (run directory format: docs/RUNS.md).

  config.TrainConfig / DataConfig     typed settings (YAML via yaml.safe_load)
  data.make_data(config, model)       train/val/test DataLoaders + DataInfo
  trainer.train(model, config, dir)   the loop -> RunResult (resume=True continues a run)
  run.load_run(dir, which)            LoadedRun(model, config, module)
  evaluate.evaluate(module, loader, task) -> EvalResult
"""
