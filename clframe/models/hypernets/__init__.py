"""Built-in hypernetworks. A hypernetwork takes ``target, n_tasks, n_classes`` (supplied: the
configured backbone and head as the target network, the scenario's task labels and output size)
and maps ``(x, t)`` to the target's output with weights generated from task ``t``'s embedding."""
