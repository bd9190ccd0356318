"""The front desk's pages, one module per area. Views parse a form, call one do_* action,
show a ClinicError's message on the form and render; no business logic lives here."""
