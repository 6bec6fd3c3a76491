"""Honest hyper-parameter selection (``clframe tune``): Hydra's Optuna sweeper searches each strategy's space
(``configs/search/<strategy>.yaml``) on a tuning stream chosen by a protocol, then the chosen configuration
is trained on the evaluation stream over seeds. Protocols: ``clframe.tune.protocols``."""
