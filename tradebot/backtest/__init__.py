"""The backtester: past bars through the live strategy, plan and fill rules.

`bars` reads CSV bars, `engine` replays them through a `tradebot.plans.engine.PlanEngine`
(the live sessions' plan engine), `screens` finds the bars worth evaluating,
`report` writes what came out, `command` is ``tradebot backtest``."""
