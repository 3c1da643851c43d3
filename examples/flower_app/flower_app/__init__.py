"""A Flower app: logistic regression on synthetic data, with model updates under fedx's encryption."""
