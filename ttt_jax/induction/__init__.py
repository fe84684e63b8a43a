"""Program synthesis: prompts, sampling, the `common` library, the sandbox, verification,
voting and the ensemble with TTT."""
