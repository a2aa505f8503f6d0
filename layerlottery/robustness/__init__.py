"""Robustness of trained networks: corruptions generated on the fly, published shifted test sets
(CIFAR-10-C, CIFAR-10.2) and adversarial attacks (FGSM, PGD), evaluated on finished runs."""
