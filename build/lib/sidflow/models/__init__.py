"""Model registries: ``create_teacher`` (captioning teachers) and ``create_student``."""

from sidflow.models.student import STUDENTS, StudentConfig, create_student
from sidflow.models.teachers import TEACHERS, TeacherConfig, create_teacher, load_teacher

__all__ = [
    "STUDENTS",
    "TEACHERS",
    "StudentConfig",
    "TeacherConfig",
    "create_student",
    "create_teacher",
    "load_teacher",
]
