"""Moving queued mail off routes that became ineligible (suspended, drained,
quarantined, unplumbed): read the Postfix queue, decide, pin, requeue."""
