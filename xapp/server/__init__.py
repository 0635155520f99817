"""gRPC transport: the argo.v1.ArgoService servicer, health, reflection, deadlines and admission control."""
