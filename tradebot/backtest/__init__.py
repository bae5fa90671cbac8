"""The backtester: past bars through the live strategy, plan and fill rules.

`bars` reads CSV bars, `engine` replays them, `report` writes what came out;
`planapi` holds the plan-engine interface it calls (and an interim engine)."""
