from postmesh.common.service import main
from postmesh.smtp_edge.app import SmtpEdgeService
from postmesh.smtp_edge.settings import SmtpEdgeSettings

if __name__ == "__main__":
    main(SmtpEdgeSettings, SmtpEdgeService, "smtp-edge")
