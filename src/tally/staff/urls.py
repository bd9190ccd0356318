from django.urls import path

from .views import account, auth, catalog, investigation, invoices, patients, sales, today

app_name = "staff"

urlpatterns = [
    path("", auth.home, name="home"),
    path("login/", auth.SignInView.as_view(), name="login"),
    path("logout/", auth.SignOutView.as_view(), name="logout"),
    path("login/code/", auth.login_code, name="login_code"),
    path("account/two-factor/", account.two_factor, name="two_factor"),
    # Today
    path("today/", today.today, name="today"),
    path("appointments/new/", today.book, name="book"),
    path("appointments/<int:appointment_id>/reschedule/", today.reschedule, name="reschedule"),
    path("appointments/<int:appointment_id>/check-in/", today.check_in, name="check_in"),
    path("appointments/<int:appointment_id>/check-in/preview/", today.check_in_preview, name="check_in_preview"),
    path("appointments/<int:appointment_id>/undo-check-in/", today.undo_check_in, name="undo_check_in"),
    path("appointments/<int:appointment_id>/cancel/", today.cancel, name="cancel"),
    path("appointments/<int:appointment_id>/no-show/", today.no_show, name="no_show"),
    path("appointments/<int:appointment_id>/undo-cancel/", today.undo_cancel, name="undo_cancel"),
    path("appointments/<int:appointment_id>/undo-no-show/", today.undo_no_show, name="undo_no_show"),
    path("appointments/<int:appointment_id>/delete/", today.delete, name="delete"),
    # Patients
    path("patients/", patients.patient_list, name="patients"),
    path("patients/new/", patients.patient_new, name="patient_new"),
    path("patients/<int:patient_id>/", patients.chart, name="chart"),
    path("patients/<int:patient_id>/sell/", sales.sell, name="sell"),
    path("packages/<int:package_id>/cancel/", sales.cancel_package, name="cancel_package"),
    path("packages/<int:package_id>/expiry/", sales.package_expiry, name="package_expiry"),
    path("patients/<int:patient_id>/invoices/new/", invoices.invoice_new, name="invoice_new"),
    # Invoices
    path("invoices/<int:invoice_id>/", invoices.invoice_detail, name="invoice"),
    path("invoices/<int:invoice_id>/edit/", invoices.invoice_edit, name="invoice_edit"),
    path("invoices/<int:invoice_id>/lines/add/", invoices.add_line, name="add_line"),
    path("invoices/<int:invoice_id>/lines/<int:line_id>/remove/", invoices.remove_line, name="remove_line"),
    path("invoices/<int:invoice_id>/payments/new/", invoices.record_payment, name="payment"),
    path("invoices/<int:invoice_id>/refund/", invoices.refund, name="refund"),
    path("invoices/<int:invoice_id>/void/", invoices.void, name="void"),
    path("invoices/<int:invoice_id>/print/", invoices.invoice_print, name="invoice_print"),
    path("invoices/<int:invoice_id>/pdf/", invoices.invoice_pdf, name="invoice_pdf"),
    # Investigations (pages built by the lead; names and patterns are fixed)
    path("packages/<int:package_id>/investigation/", investigation.investigation, name="investigation"),
    path("packages/<int:package_id>/fixes/", investigation.fix, name="fix"),
    path("patients/<int:patient_id>/investigation/", investigation.patient_investigation,
         name="patient_investigation"),
    path("patients/<int:patient_id>/fixes/", investigation.patient_fix, name="patient_fix"),
    path("patients/<int:patient_id>/export.json", investigation.export_json, name="export_json"),
    path("patients/<int:patient_id>/export/", investigation.export_print, name="export_print"),
    path("audit/", investigation.audit, name="audit"),
    # Owner
    path("catalog/", catalog.catalog, name="catalog"),
    path("catalog/services/new/", catalog.service_new, name="service_new"),
    path("catalog/services/<int:service_id>/", catalog.service_edit, name="service_edit"),
    path("catalog/packages/new/", catalog.package_new, name="package_new"),
    path("catalog/packages/<int:template_id>/", catalog.package_edit, name="package_edit"),
    path("staff/", catalog.staff_list, name="staff_list"),
]
