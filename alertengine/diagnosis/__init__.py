"""The Diagnostic Council: two models explain an incident (consensus, dissent or single model);
a deterministic heuristic when the AI is unavailable. Diagnosis only annotates: policy decides."""
