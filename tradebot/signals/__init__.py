"""Where signals come from: strategies and indicators, the HTTP provider, the signal JSON."""
