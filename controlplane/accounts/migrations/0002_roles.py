"""The roles of ARCHITECTURE §8 as Groups, with their permission strings as Permissions."""

from django.db import migrations

# Frozen copy: a migration must not change when roles.py does.
PERMISSIONS = {
    "config_read": "config:read",
    "config_write": "config:write",
    "users_manage": "users:manage",
    "audit_read": "audit:read",
    "dataplane_sync": "dataplane:sync",
}
ROLES = {
    "admin": ("config_read", "config_write", "users_manage", "audit_read"),
    "operator": ("config_read", "config_write", "audit_read"),
    "readonly": ("config_read",),
    "dataplane": ("dataplane_sync",),
}


def create_roles(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    content_type, _ = ContentType.objects.get_or_create(app_label="accounts", model="gatewaypermission")
    permissions = {}
    for codename, name in PERMISSIONS.items():
        permissions[codename], _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
    for role, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(*(permissions[c] for c in codenames))


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()
    apps.get_model("auth", "Permission").objects.filter(
        content_type__app_label="accounts", codename__in=PERMISSIONS
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
